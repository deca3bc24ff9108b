"""Deploybot: deploys tagged releases; a production deploy needs approval.

Only tags that exist can be deployed, and the model cannot even propose another one. The
tags are fetched once when the agent is built (`available_tags`, a stand-in for asking the
git server) and the deploy tools take `tag` as an enum of them, so:

* the model sees the list in the tool schema, and a grammar-constrained local model can
  only write one of them (the grammar follows the enum);
* validation rejects any other tag as an `invalid_output`, before anything runs and before
  anyone is asked to approve it.

Every thread also pre-fetches the list (`ContextSettings.prefetch`, see docs/context.md): a
`list_git_tags` call runs before the first model call, so the model knows which tag is
newest without spending a step on asking.

The deploy tools record what they did in `DEPLOYMENTS` (a stand-in for a real deploy
system) and use the idempotency key so a retried call is not applied twice.
"""

from pathlib import Path
from typing import Literal

from threadline import Agent, ContextSettings, ToolContext, tool

TAGS = ["v1.4.0", "v1.4.1", "v1.5.0"]  # oldest first, as they were made
DEPLOYMENTS: list[dict[str, str]] = []


def available_tags() -> list[str]:
    """The release tags that exist, newest first (a real agent would ask its git server).

    Newest first because the newest is the usual choice ("deploy the latest"), and a small
    model leans to what it read first.
    """
    return list(reversed(TAGS))


Tag = Literal[tuple(available_tags())]  # type: ignore[valid-type]  # an enum of the tags


@tool
def list_git_tags() -> list[str]:
    """List the release tags of the repository, newest first."""
    return available_tags()


def _deploy(target: str, tag: str, environment: str, ctx: ToolContext) -> str:
    if tag not in TAGS:
        raise ValueError(f"unknown tag {tag}; known tags: {', '.join(TAGS)}")
    if not any(d["key"] == ctx.idempotency_key for d in DEPLOYMENTS):
        DEPLOYMENTS.append(
            {"target": target, "tag": tag, "environment": environment, "key": ctx.idempotency_key}
        )
    return f"{target} {tag} deployed to {environment}"


@tool(side_effects=True, idempotent=True, approval=lambda args: args.environment == "production")
def deploy_backend(
    tag: Tag, environment: Literal["staging", "production"], ctx: ToolContext
) -> str:
    """Deploy a tag of the backend. Production deploys need a human's approval.

    Args:
        tag: the git tag to deploy (one that exists)
        environment: staging or production
    """
    return _deploy("backend", tag, environment, ctx)


@tool(side_effects=True, idempotent=True, approval="always")
def deploy_frontend(
    tag: Tag, environment: Literal["staging", "production"], ctx: ToolContext
) -> str:
    """Deploy a tag of the frontend (always needs a human's approval).

    Args:
        tag: the git tag to deploy (one that exists)
        environment: staging or production
    """
    return _deploy("frontend", tag, environment, ctx)


agent = Agent(
    name="deploybot",
    tools=[list_git_tags, deploy_backend, deploy_frontend],
    prompt=Path(__file__).with_name("prompt.md.j2"),  # versioned template (docs/prompts.md)
    context=ContextSettings(
        prompt_vars={"default_environment": "staging"},
        prefetch=[(list_git_tags, {})],
    ),
)
