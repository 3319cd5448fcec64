"""Layer 5 — training SINE: losses with query matching, episode data (synthetic scenes, augmentation,
pair sampling, folders of labelled images), the configuration and the training loop. Test-time
adaptation, which uses this loop on the user's references, is :mod:`sine_model.fitting.adaptation`."""

from sine_model.training.augment import AugmentConfig, augment
from sine_model.training.config import load_config
from sine_model.training.folders import FileItem, folder_groups
from sine_model.training.loop import Trainer, train
from sine_model.training.losses import SetCriterion, dice_loss, sigmoid_bce_loss
from sine_model.training.matcher import HungarianMatcher, class_indices, match_ids
from sine_model.training.pairs import Episode, PairConfig, PairItem, PairSampler
from sine_model.training.points import point_sample, uncertain_points, uniform_points
from sine_model.training.synthetic import SceneConfig, make_group, make_scene, synthetic_groups

__all__ = [
    "load_config",
    "Trainer",
    "train",
    "SetCriterion",
    "HungarianMatcher",
    "match_ids",
    "class_indices",
    "sigmoid_bce_loss",
    "dice_loss",
    "point_sample",
    "uniform_points",
    "uncertain_points",
    "AugmentConfig",
    "augment",
    "FileItem",
    "folder_groups",
    "Episode",
    "PairConfig",
    "PairItem",
    "PairSampler",
    "SceneConfig",
    "make_scene",
    "make_group",
    "synthetic_groups",
]
