"""User provisioning, as in Thunderline's Reactor saga: Gate → Block → Link.

Check the address, reserve a magic-link token, create the user, give them a vault and the
default community, mail them the link, announce the onboarding. A failure up to the mail
undoes everything, last first: the membership is removed (the seed left this undone), the
vault deprovisioned, the user deleted, the token revoked.

The seed mailed the link before the user existed, so a later failure left a live link to a
deleted user. Here the mail goes out once everything it points to exists, and it is the
pivot: a mail cannot be unsent, so after it the saga only goes forward (the announcement
is retried until it goes out).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, EmailStr, Field

from sagaline import NO_RETRY, Domains, FromInput, FromStep, RetryPolicy, Saga, Step
from tasks.block.steps import deprovision_vault, provision_vault
from tasks.gate.steps import (
    create_user,
    delete_user,
    emit_onboarding_event,
    generate_token,
    revoke_token,
    send_magic_link,
    validate_email,
)
from tasks.link.steps import create_default_community, remove_membership


class ProvisioningInput(BaseModel):
    """Who to onboard, and where their link leads."""

    email: EmailStr = Field(max_length=320)
    magic_link_redirect: str = Field(default="/communities", pattern=r"^/[^\s]*$",
                                     max_length=2000)


EMAIL = FromStep("validate_email", "email")
USER_ID = FromStep("create_user", "user_id")
QUICK_RETRY = RetryPolicy(attempts=3, initial=timedelta(milliseconds=200))
MAIL_RETRY = RetryPolicy(attempts=4, initial=timedelta(milliseconds=500))
UNTIL_IT_GOES_OUT = RetryPolicy(attempts=20, initial=timedelta(seconds=1),
                                maximum=timedelta(minutes=1))

user_provisioning = Saga(
    "user_provisioning",
    description="Onboard a user: token, user, vault, community membership, then the link.",
    inputs=ProvisioningInput,
    domains=Domains("gate", "block", "link", reason="user onboarding needs auth (gate), a "
                    "vault (block) and a community (link)"),
    steps=[
        Step("validate_email", validate_email, args={"email": FromInput("email")},
             retry=NO_RETRY),
        Step("generate_token", generate_token, compensation=revoke_token,
             args={"email": EMAIL, "redirect": FromInput("magic_link_redirect")},
             compensation_args={"token_id": FromStep("generate_token", "token_id")},
             retry=QUICK_RETRY),
        Step("create_user", create_user, compensation=delete_user,
             args={"email": EMAIL}, compensation_args={"user_id": USER_ID},
             retry=QUICK_RETRY),
        Step("provision_vault", provision_vault, compensation=deprovision_vault,
             args={"user_id": USER_ID},
             compensation_args={"vault_id": FromStep("provision_vault", "vault_id")},
             retry=QUICK_RETRY),
        Step("create_default_community", create_default_community,
             compensation=remove_membership, args={"user_id": USER_ID},
             compensation_args={"membership_id": FromStep("create_default_community",
                                                          "membership_id")},
             retry=QUICK_RETRY),
        Step("send_magic_link", send_magic_link, pivot=True,
             args={"token_id": FromStep("generate_token", "token_id"), "email": EMAIL},
             retry=MAIL_RETRY, time_limit=timedelta(seconds=60)),
        Step("emit_onboarding_event", emit_onboarding_event,
             args={"user_id": USER_ID, "vault_id": FromStep("provision_vault", "vault_id"),
                   "community_id": FromStep("create_default_community", "community_id")},
             retry=UNTIL_IT_GOES_OUT),
    ],
    returns={"user_id": USER_ID, "vault_id": FromStep("provision_vault", "vault_id")},
    step_time_limit=timedelta(seconds=30),
)
