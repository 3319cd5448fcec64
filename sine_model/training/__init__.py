"""Training code for SINE: losses with query matching, episode data (synthetic scenes, augmentation,
pair sampling, folders of labelled images)."""

from .augment import AugmentConfig, augment
from .folders import FileItem, folder_groups
from .losses import SetCriterion, dice_loss, sigmoid_bce_loss
from .matcher import HungarianMatcher, class_indices, match_ids
from .pairs import Episode, PairConfig, PairItem, PairSampler
from .points import point_sample, uncertain_points, uniform_points
from .synthetic import SceneConfig, make_group, make_scene, synthetic_groups

__all__ = [
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
