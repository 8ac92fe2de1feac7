"""What counts as one lesion: the connectivity every lesion count, match and component in the kit uses."""
from __future__ import annotations

# Voxels sharing a face or an edge (not only a corner) belong to one lesion, as the challenge's scripts label
# components (docs/metrics.md). The organisers' click simulation labels its own way: petct.click_simulation.
LESION_CONNECTIVITY = 18
