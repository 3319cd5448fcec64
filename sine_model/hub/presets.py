"""Registry of model presets: architecture, weight sources, hashes, licence and input conventions.

A :class:`Preset` is pure metadata (timm-style): everything needed to build a model, tell the user where
its weights come from, check them, and prepare inputs the way the weights expect. Loading and importing
weights lives in :mod:`sine_model.hub.pretrained`; this module never touches files or the network.

Registered presets
------------------
``sine-vitl``
    The authors' SINE release (DINOv2 ViT-L/14 encoder, trained on ADE20K, COCO and Objects365). The
    weights exist only as one Google-Drive file; the authors publish no hash and no size, so
    ``sha256``/``size_bytes`` are ``None`` here and ``napari-sine weights verify`` compares against the
    hash recorded when the file was imported. The DINOv2 encoder can come from that file, from Meta's
    ``dinov2_vitl14_pretrain.pth`` or from the Hugging Face hub.

``sine-embedded``
    The small model shipped inside the package (``sine_model/data/sine-embedded.safetensors``): the
    official neck, fusion and M-Former at a reduced width over the filter-bank encoder, trained from scratch
    by ``napari-sine train configs/embedded.toml`` on CC0 data only. Its ``bundled`` source records the
    file's sha256, checked on every load. The default model when no official weights are installed.

Further presets are added with :func:`register_preset`, e.g. a bundled one::

    register_preset(Preset(
        name="my-model", description="...", model=ModelConfig(kind="filterbank", dim=128, ...),
        weights=WeightSource(kind="bundled", location="data/my-model.safetensors",
                             sha256="<64 hex digits>", size_bytes=..., key_format="sine"),
        licence=LicenceNotice(...), input=InputSpec(...),
    ))

A ``bundled`` file must be safetensors whose metadata holds ``napari_sine_preset`` = the preset name
(:func:`sine_model.hub.pretrained.save_preset_weights` writes such a file). It is loaded directly from the
package and checked against ``sha256`` on every load; nothing is copied into the cache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from sine_model.hub.preset_specs import FittingRecipe, InputSpec
from sine_model.modeling.config import ModelConfig, build_model
from sine_model.modeling.encoder import EncoderConfig
from sine_model.modeling.sine import SINE
from sine_model.modes import INSTANCE_SOURCES
from sine_model.postprocess.id_matching import ID_SOURCES

__all__ = [
    "WeightSource",
    "LicenceNotice",
    "InputSpec",
    "FittingRecipe",
    "Preset",
    "PRESETS",
    "OFFICIAL_PRESET",
    "EMBEDDED_PRESET",
    "get_preset",
    "list_presets",
    "register_preset",
]

SourceKind = Literal["google_drive", "url", "hf_hub", "bundled"]
KeyFormat = Literal["sine", "meta", "timm", "hf"]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class WeightSource:
    """Where one weights file comes from.

    Parameters
    ----------
    kind : {"google_drive", "url", "hf_hub", "bundled"}
        ``google_drive``/``url``: download by hand, then ``napari-sine weights import``;
        ``hf_hub``: a file on the Hugging Face hub (``location`` is the repo id, ``filename`` the file);
        ``bundled``: a safetensors file shipped inside the ``sine_model`` package.
    location : str
        URL, Drive file id, hub repo id, or (bundled) path relative to the ``sine_model`` package.
    filename : str or None
        File name inside a hub repo, or the usual name of a downloaded file.
    sha256 : str or None
        Published SHA-256 of the file as distributed; ``None`` when none is published.
    size_bytes : int or None
        Exact size as distributed; ``None`` when not published.
    size_note : str
        Human-readable size hint when the exact size is unknown.
    key_format : {"sine", "meta", "timm", "hf"}
        Parameter naming inside the file (``meta``/``timm``/``hf`` are DINOv2 namings).
    licence : str
        Licence of this file.
    description : str
        One line for listings.
    """

    kind: SourceKind
    location: str
    filename: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    size_note: str = ""
    key_format: KeyFormat = "sine"
    licence: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("google_drive", "url", "hf_hub", "bundled"):
            raise ValueError(f"unknown weight source kind {self.kind!r}")
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if self.kind == "bundled" and self.sha256 is None:
            raise ValueError("a bundled weights file needs its sha256 (it is checked on every load)")
        if self.kind == "hf_hub" and not self.filename:
            raise ValueError(f"hf_hub source {self.location!r} needs a filename")

    @property
    def url(self) -> str | None:
        """Browser URL of the file (``None`` for bundled files)."""
        if self.kind == "google_drive":
            return f"https://drive.google.com/file/d/{self.location}/view"
        if self.kind == "hf_hub":
            return f"https://huggingface.co/{self.location}/blob/main/{self.filename}"
        if self.kind == "url":
            return self.location
        return None


@dataclass(frozen=True)
class LicenceNotice:
    """Licence terms shown to the user.

    Parameters
    ----------
    name : str
        Short licence name.
    text : str
        Notice printed on the first load when ``show_on_first_load`` is set.
    url : str
        Where the licence is published.
    show_on_first_load : bool
        Print ``text`` once (per cache) the first time the preset is loaded.
    """

    name: str
    text: str
    url: str = ""
    show_on_first_load: bool = False


@dataclass(frozen=True)
class Preset:
    """A named model: architecture, weights, licence and input conventions.

    Parameters
    ----------
    name : str
        Lowercase identifier (``sine-vitl``).
    description : str
        One line for listings.
    model : ModelConfig
        The architecture, built by :func:`~sine_model.modeling.config.build_model`.
    weights : WeightSource
        The SINE weights file.
    encoder_weights : tuple of WeightSource
        Files that can supply the encoder when the SINE file lacks it, in order of preference; the
        first ``hf_hub`` one is fetched automatically when allowed.
    licence : LicenceNotice
        Terms of the weights.
    input : InputSpec
        Input preparation the weights expect.
    official : bool
        Weights published by the SINE authors.
    instance_source : {"queries", "semantic"}
        How the instance answer is made by default: SINE's instance queries (official), or the
        connected components of the semantic answer (:mod:`sine_model.postprocess.components`), for models
        whose
        instance branch is measurably weaker than their semantic answer.
    id_source : {"queries", "matching"}
        How the ID answer is made: SINE's ID queries (official), or the instance answer's objects matched
        to the reference objects (:mod:`sine_model.postprocess.id_matching`), for models whose ID head is
        measurably weak; never for the official model.
    recipe : FittingRecipe
        The fitting stages run by default on the references (chosen on the shared evaluation sets,
        docs/quality.md); the default runs none.
    """

    name: str
    description: str
    model: ModelConfig
    weights: WeightSource
    licence: LicenceNotice
    input: InputSpec = field(default_factory=InputSpec)
    encoder_weights: tuple[WeightSource, ...] = ()
    official: bool = False
    instance_source: str = "queries"
    id_source: str = "queries"
    recipe: FittingRecipe = field(default_factory=FittingRecipe)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"preset name {self.name!r} must be lowercase letters, digits, '.', '_' or '-'")
        if not isinstance(self.model, ModelConfig):
            raise TypeError(f"preset {self.name!r}: model must be a ModelConfig, "
                            f"got {type(self.model).__name__}")
        if self.instance_source not in INSTANCE_SOURCES:
            raise ValueError(f"instance_source must be one of {INSTANCE_SOURCES}, "
                             f"got {self.instance_source!r}")
        if self.id_source not in ID_SOURCES or (self.official and self.id_source != "queries"):
            raise ValueError(f"id_source must be one of {ID_SOURCES} ('queries' for official weights), "
                             f"got {self.id_source!r}")

    def build(self) -> SINE:
        """Build the architecture with random weights (no file or network access); ``preset`` is unset."""
        return build_model(self.model)

    @property
    def encoder_config(self) -> EncoderConfig | None:
        """DINOv2 shape of the encoder, or ``None`` for a small encoder."""
        return self.model.encoder_config


OFFICIAL_PRESET = "sine-vitl"
EMBEDDED_PRESET = "sine-embedded"  # the small model shipped inside the package (registered below)

_SINE_ACADEMIC = (
    "The SINE weights for preset 'sine-vitl' come from the authors' release (aim-uofa/SINE, Liu et al., "
    "NeurIPS 2024). Its code is licensed BSD-2-Clause *for academic use only*; commercial use needs "
    "permission from the authors (contact Chunhua Shen). No separate licence is stated for the "
    "weights, so napari-sine assumes the same academic-only terms. The DINOv2 encoder weights (Meta) "
    "are Apache-2.0. See https://github.com/aim-uofa/SINE."
)

_DINOV2_L_SOURCES = (
    WeightSource(
        kind="hf_hub",
        location="timm/vit_large_patch14_dinov2.lvd142m",
        filename="model.safetensors",
        size_note="about 1.2 GB",
        key_format="timm",
        licence="Apache-2.0",
        description="DINOv2 ViT-L/14 on the Hugging Face hub (timm names, safetensors)",
    ),
    WeightSource(
        kind="url",
        location="https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth",
        filename="dinov2_vitl14_pretrain.pth",
        size_note="about 1.2 GB",
        key_format="meta",
        licence="Apache-2.0",
        description="Meta's DINOv2 ViT-L/14 release (the file the official SINE code loads)",
    ),
    WeightSource(
        kind="hf_hub",
        location="facebook/dinov2-large",
        filename="model.safetensors",
        size_note="about 1.2 GB",
        key_format="hf",
        licence="Apache-2.0",
        description="DINOv2 ViT-L/14 in Hugging Face transformers naming (mapped on import)",
    ),
)

PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset, *, replace: bool = False) -> Preset:
    """Add ``preset`` to :data:`PRESETS`.

    Parameters
    ----------
    preset : Preset
        The entry to add.
    replace : bool
        Allow replacing an entry of the same name.

    Returns
    -------
    Preset
        ``preset``, for chaining.

    Raises
    ------
    ValueError
        If the name is taken and ``replace`` is false.
    """
    if not isinstance(preset, Preset):
        raise TypeError(f"register_preset expects a Preset, got {type(preset).__name__}")
    if preset.name in PRESETS and not replace:
        raise ValueError(f"preset {preset.name!r} is already registered; pass replace=True")
    PRESETS[preset.name] = preset
    return preset


def get_preset(name: str | Preset) -> Preset:
    """Look up a preset by name (a :class:`Preset` is passed through).

    Raises
    ------
    ValueError
        For an unknown name, listing the registered ones.
    """
    if isinstance(name, Preset):
        return name
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown preset {name!r}: registered presets are {sorted(PRESETS)}") from None


def list_presets() -> list[Preset]:
    """All registered presets, sorted by name."""
    return [PRESETS[name] for name in sorted(PRESETS)]


register_preset(
    Preset(
        name=OFFICIAL_PRESET,
        description="official SINE (DINOv2 ViT-L/14), trained on ADE20K + COCO + Objects365",
        model=ModelConfig(kind="vitl", dim=256, num_heads=8, ffn_dim=2048, num_fusion_layers=1,
                          num_decoder_layers=6, num_queries=200, gaussian_sigma=10.0),
        weights=WeightSource(
            kind="google_drive",
            location="1GYQbbUZClbmhVESDLpRwqe-TyijW2kKb",
            filename="pytorch_model.bin",
            sha256=None,  # not published by the authors: verified against the hash recorded at import
            size_bytes=None,  # not published either
            size_note="about 1.3 GB with the DINOv2 encoder, about 75 MB without it",
            key_format="sine",
            licence="BSD-2-Clause, academic use only",
            description="the authors' release on Google Drive (DeepSpeed zero_to_fp32 state dict)",
        ),
        encoder_weights=_DINOV2_L_SOURCES,
        licence=LicenceNotice(
            name="BSD-2-Clause (academic use only)",
            text=_SINE_ACADEMIC,
            url="https://github.com/aim-uofa/SINE",
            show_on_first_load=True,
        ),
        # Official FSS evaluation: resize to 518x518, pad to 896 (64x64 grid).
        input=InputSpec(pad_size=896, resize_rule="fss"),
        official=True,
    )
)

_EMBEDDED_TERMS = (
    "The weights of preset 'sine-embedded' were trained by the napari-sine authors from random "
    "initialisation on CC0 images only (the DSB2018 / BBBC038 stage-1 test set, Caicedo et al. 2019) "
    "and procedurally generated scenes; they are released under napari-sine's BSD-3-Clause licence."
)

register_preset(
    Preset(
        name=EMBEDDED_PRESET,
        description="embedded SINE (filter-bank encoder, trained from scratch on CC0 nuclei + synthetic "
                    "scenes); ships with napari-sine, works offline",
        model=ModelConfig(kind="filterbank", dim=128, num_heads=4, ffn_dim=512, num_fusion_layers=1,
                          num_decoder_layers=3, num_queries=50, gaussian_sigma=10.0, encoder_dim=256),
        weights=WeightSource(
            kind="bundled",
            location="data/sine-embedded.safetensors",
            sha256="5c896f317dfd0becd5b079bee487843c0fc39bfdc829d0fee9c8ffa9982d1edf",
            size_bytes=11296344,
            key_format="sine",
            licence="BSD-3-Clause",
            description="trained by `napari-sine train configs/embedded.toml`, continued to 5,500 steps "
                        "(docs/training.md)",
        ),
        licence=LicenceNotice(name="BSD-3-Clause", text=_EMBEDDED_TERMS,
                              url="https://opensource.org/license/bsd-3-clause"),
        # Trained on 224-pixel crops at the images' own scale: targets are tiled, never shrunk. Objects
        # whose median diameter is under 28 px or over 128 px are resized into that range when no scale is
        # given (measured on synthetic discs: docs/quality.md#automatic-scale).
        input=InputSpec(pad_size=224, resize_rule="fss", object_diameter_px=(28.0, 128.0)),
        # Its instance queries are undertrained; the components of its semantic answer score far higher
        # (docs/quality.md), so those are its instance answer.
        instance_source="semantic",
        # Its ID head is weak (raw ID masks reach IoU 0.35 at best on its own reference): its ID answer is
        # its instance answer matched to the reference objects (docs/quality.md#id-by-matching).
        id_source="matching",
        # Measured on the shared evaluation sets (docs/quality.md, "Default recipe").
        recipe=FittingRecipe(refine_steps=400, refiner_maps=False, refiner_forest=True,
                             evidence="docs/quality.md#default-recipe"),
    )
)
