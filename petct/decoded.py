"""A study's PET and CT already in memory, handed to the algorithm's read_study instead of being read again."""
from __future__ import annotations

from dataclasses import dataclass

import SimpleITK as sitk

from petct.resample import ResampledCT


@dataclass
class DecodedStudy:
    """The PET as decoded, and the CT as decoded (on any grid) or already resampled onto the PET's grid.

    The service's upload checks make one; algorithm.pipeline.read_study takes each image out of it once used (so
    that the record does not keep it alive) and reads what is missing from its file. A resampled CT's array is
    the one the engine gets: it is not copied again.
    """

    pet: sitk.Image | None = None
    ct: sitk.Image | ResampledCT | None = None

    def take_pet(self) -> sitk.Image | None:
        pet, self.pet = self.pet, None
        return pet

    def take_ct(self) -> sitk.Image | ResampledCT | None:
        ct, self.ct = self.ct, None
        return ct

    @property
    def notes(self) -> dict[str, object]:
        """What was done to the images, as a study's notes say it (a CT resampled: its "ct_resampled" entry)."""
        return {"ct_resampled": self.ct.note} if isinstance(self.ct, ResampledCT) else {}
