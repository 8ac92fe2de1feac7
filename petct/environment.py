"""Every PETCT_KIT_* environment variable the kit reads, each declared once with what it does.

Not GRAND_CHALLENGE_*: the platform strips those from the user process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Variable:
    name: str
    help: str

    def get(self, default: str | None = None) -> str | None:
        """Its value as set (an empty value too), else `default`."""
        return os.environ.get(self.name, default)


CHALLENGE = Variable("PETCT_KIT_CHALLENGE", "the autoPET edition every container follows (--challenge's default)")
ENGINE = Variable("PETCT_KIT_ENGINE", "the algorithm's engine: auto, nnunet or baseline (--engine's default)")
DEVICE = Variable("PETCT_KIT_DEVICE", "the algorithm's device: auto, cuda or cpu (--device's default)")
DATA_CENTRIC = Variable("PETCT_KIT_DATA_CENTRIC", "2024: the algorithm's data-centric answer, true or false")
DEBUG = Variable("PETCT_KIT_DEBUG", "1: a failing algorithm prints its traceback (--debug)")
TOKEN = Variable("PETCT_KIT_TOKEN", "the service's organiser bearer token (--token), which other users cannot read "
                                    "from the process list")
VARIABLES = (CHALLENGE, ENGINE, DEVICE, DATA_CENTRIC, DEBUG, TOKEN)
