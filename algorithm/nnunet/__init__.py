"""nnU-Net v2 inference without nnunetv2: drop a trained results folder in the model location and it runs.

Model folder (the one `nnUNetv2_train` writes, e.g.
`nnUNet_results/Dataset221_autoPETIII/nnUNetTrainer__nnUNetPlans__3d_fullres/`):

    plans.json                         the plan (nnU-Net >= 2.3 format: configurations[cfg]["architecture"])
    dataset.json                       channel_names and labels
    fold_0/checkpoint_final.pth        one folder per fold; checkpoint_best.pth is used when final is missing
    fold_1/checkpoint_final.pth ...
    kit.json                           optional: {"channel_order": ["ct", "pet"]}

The model location may also hold that folder one or two levels down (`Dataset221_autoPETIII/<trainer folder>/`
or `<trainer folder>/`). Several trainer folders are chosen between
with the trainer/plans/configuration options (nnUNetv2_predict's -tr/-p/-c); several configurations are
ensembled (selection.py, ensemble.py). fold_all runs with folds ("all",), another checkpoint file with the
checkpoint option.

Channels: each network input is the study's PET (SUV) or CT (on the PET grid). By default dataset.json's
channel_names decide ("CT"/"CTres" -> ct, "PET"/"SUV"/"FDG"/"PSMA" -> pet). autoPET datasets differ (PET
first in 2022, CT first from 2024, and some name both channels "CT"), so the order can be given explicitly:
the `channel_order` option (command line) wins over kit.json, which wins over the names.

Supported: 3D single-stage configurations (3d_fullres, 3d_lowres, or custom ones inheriting from them)
with PlainConvUNet or ResidualEncoderUNet, label-based (softmax) training with background plus a lesion
class (more classes when exactly one is named lesion/tumor), the normalisation schemes CTNormalization,
ZScoreNormalization, NoNormalization, RescaleTo01Normalization. Not supported: 2D, cascades, region-based
training, custom network classes.
"""
from algorithm.nnunet.engine import NnUNetEngine
from algorithm.nnunet.ensemble import EnsembleEngine
from algorithm.nnunet.folder import is_results_folder
from algorithm.nnunet.loading import load_model

__all__ = ["EnsembleEngine", "NnUNetEngine", "is_results_folder", "load_model"]
