"""Deploybot: lists git tags and deploys them; a production deploy needs approval.

The deploy tools record what they did in `DEPLOYMENTS` (a stand-in for a real deploy
system) and use the idempotency key so a retried call is not applied twice.
"""

from pathlib import Path
from typing import Literal

from threadline import Agent, ToolContext, tool

TAGS = ["v1.4.0", "v1.4.1", "v1.5.0"]
DEPLOYMENTS: list[dict[str, str]] = []


@tool
def list_git_tags() -> list[str]:
    """List the release tags of the repository, oldest first."""
    return TAGS


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
    tag: str, environment: Literal["staging", "production"], ctx: ToolContext
) -> str:
    """Deploy a tag of the backend. Production deploys need a human's approval.

    Args:
        tag: the git tag to deploy, e.g. v1.5.0
        environment: staging or production
    """
    return _deploy("backend", tag, environment, ctx)


@tool(side_effects=True, idempotent=True, approval="always")
def deploy_frontend(
    tag: str, environment: Literal["staging", "production"], ctx: ToolContext
) -> str:
    """Deploy a tag of the frontend (always needs a human's approval).

    Args:
        tag: the git tag to deploy, e.g. v1.5.0
        environment: staging or production
    """
    return _deploy("frontend", tag, environment, ctx)


agent = Agent(
    name="deploybot",
    tools=[list_git_tags, deploy_backend, deploy_frontend],
    prompt=Path(__file__).with_name("prompt.md.j2"),  # versioned template (docs/prompts.md)
    options={"prompt_vars": {"default_environment": "staging"}},
)
