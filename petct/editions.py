"""The autoPET editions the kit supports, as one table of what differs between them (README, "Editions").

Every container reads its profile from here (`--challenge`, or PETCT_KIT_CHALLENGE): the algorithm
(output folder, extra outputs, clicks), the evaluation (scoring mode, ranking rule), the service and the
dry run. The default profile is the 2022/2023 contract, which is what the kit always did.
"""
from __future__ import annotations

from dataclasses import dataclass

from petct.environment import CHALLENGE
from petct.errors import InputError

# The algorithm's image inputs under /input, as every edition so far names them (an edition may name others).
PET_RELATIVE_PATH = "images/pet"
CT_RELATIVE_PATH = "images/ct"
DATA_CENTRIC_JSON = "data-centric-model.json"  # 2024: the algorithm's second output, a bare JSON boolean
CLICKS_JSON = "lesion-clicks.json"  # 2025 interactive track: the algorithm's click input
MAX_CLICKS = 10  # per kind (tumour, background), the 2025 protocol's last step
# 2026 closed loop: one job without scribbles, then corrections. The organisers' web page and
# interactive/README.md say 6 steps; their interactive_loop.py (--max_iters) and reference run use 5.
SCRIBBLE_STEPS = 6
PUBLISHED_CODE_SCRIBBLE_STEPS = 5
SCRIBBLE_STRATEGIES = ("centerline", "random", "boundary")  # each on a third of the test cases
# A mask with no false positive or no false negative voxel: "kit" scribbles the side with errors (nothing
# new for a perfect mask); "published" fails the step, as the organisers' loop does (docs/editions.md).
SCRIBBLE_RULES = ("kit", "published")


@dataclass(frozen=True)
class Edition:
    """What one edition's contract fixes; every field is a difference the README's table lists."""

    name: str
    title: str
    output_slug: str  # the mask goes to /output/images/<output_slug>/
    pet_relative_path: str = PET_RELATIVE_PATH  # the PET input's folder under /input
    ct_relative_path: str = CT_RELATIVE_PATH  # the CT input's folder under /input
    data_centric_output: bool = False  # also write /output/data-centric-model.json (a JSON boolean)
    rank_needs_subsets: bool = False  # `rank` averages per tracer x centre subset and refuses without them
    clicks: bool = False  # /input/lesion-clicks.json is read; jobs come in steps of 0..MAX_CLICKS clicks
    # 2026: /input/lesion-clicks.json holds scribbles (any number of points) simulated in a closed loop
    # from the algorithm's previous mask (evaluation.scribble_simulation); scored per step and as areas
    scribbles: bool = False
    # Dice of a study without lesions: undefined (skipped in the mean) in every edition's published script
    # up to 2025, its false positives counting through the false positive volume alone; "loop": the 2026
    # loop's rule, 1 for an empty mask and 0 for any false positive.
    negative_study_dice: str = "undefined"

    @property
    def output_relative_path(self) -> str:
        return f"images/{self.output_slug}"

    @property
    def click_steps(self) -> tuple[int, ...]:
        """Clicks of each kind per protocol step: (0, 1, ..., 10) for the interactive track, else (0,)."""
        return tuple(range(MAX_CLICKS + 1)) if self.clicks else (0,)


EDITIONS: dict[str, Edition] = {edition.name: edition for edition in (
    Edition(name="autopet-2022", title="autoPET 2022/2023 (FDG, then FDG and PSMA)",
            output_slug="automated-petct-lesion-segmentation"),
    Edition(name="autopet-2024", title="autoPET III 2024 (FDG and PSMA, data-centric award)",
            output_slug="automated-petct-lesion-segmentation", data_centric_output=True,
            rank_needs_subsets=True),
    Edition(name="autopet-2025-interactive", title="autoPET IV 2025, task 1 (interactive, lesion clicks)",
            output_slug="tumor-lesion-segmentation", clicks=True),
    Edition(name="autopet-2026-interactive", title="autoPET V 2026 (interactive, scribbles in a closed loop)",
            output_slug="tumor-lesion-segmentation", scribbles=True, negative_study_dice="loop"),
)}
DEFAULT_CHALLENGE = "autopet-2022"
CHALLENGE_CHOICES = tuple(EDITIONS)


def edition(name: str | None = None) -> Edition:
    """The profile called `name`; None: PETCT_KIT_CHALLENGE, else the 2022 default."""
    name = name or CHALLENGE.get() or DEFAULT_CHALLENGE
    try:
        return EDITIONS[name]
    except KeyError:
        raise InputError(f"unknown challenge {name!r}; expected one of {', '.join(CHALLENGE_CHOICES)}") from None


def default_challenge() -> str:
    """The --challenge default: PETCT_KIT_CHALLENGE when set, else the 2022 profile."""
    return CHALLENGE.get() or DEFAULT_CHALLENGE
