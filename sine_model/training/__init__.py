"""Training code for SINE: losses with query matching, episode data (synthetic scenes, augmentation,
pair sampling, folders of labelled images), the training loop and test-time adaptation."""

from .adapt import AdaptResult, adapt_propagator
from .augment import AugmentConfig, augment
from .config import load_config
from .folders import FileItem, folder_groups
from .loop import Trainer, train
from .losses import SetCriterion, dice_loss, sigmoid_bce_loss
from .matcher import HungarianMatcher, class_indices, match_ids
from .pairs import Episode, PairConfig, PairItem, PairSampler
from .points import point_sample, uncertain_points, uniform_points
from .synthetic import SceneConfig, make_group, make_scene, synthetic_groups

__all__ = [
    "adapt_propagator",
    "AdaptResult",
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
