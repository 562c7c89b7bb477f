"""Instance-segmentation networks: torchvision Mask R-CNN (top-down) and a bottom-up smp network.

Both take raw pixels like every masklab model, (N, 3, H, W) uint8, and say what they return in
``output_kind``: ``"detections"`` (Mask R-CNN: per image a dict of boxes, labels, scores and soft
masks (K, 1, H, W)) or ``"logits"`` (bottom-up: (N, C + 1, H, W), channel 0 background, 1..C-1 the
class interiors, channel C the object boundaries). Turning either into instance predictions is
the instance task's job (masklab.tasks.instance); here are only the networks.

Nothing is downloaded: torchvision's builders run with ``weights=None, weights_backbone=None``
(trained from scratch, so torchvision uses BatchNorm instead of frozen BatchNorm); a local weights
file (a torchvision or masklab state_dict) is loaded with ``weights_path``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from masklab.errors import UserError
from masklab.models import spec
from masklab.models.factory import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NormalizedSegmentationModel,
    load_weights_file,
    smp_network,
)

MASKRCNN_VARIANTS = ("resnet50_fpn", "resnet50_fpn_v2", "mobilenet_v3_fpn")
# Keys of an instance model config that are postprocessing settings of the bottom-up path, not network arguments.
BOTTOM_UP_POSTPROCESS = ("boundary_width", "min_area", "min_score")


class MaskRCNNNet(nn.Module):
    """torchvision Mask R-CNN behind masklab's pixel interface.

    ``forward(images)``: images (N, 3, H, W) uint8 or a list of (3, H_i, W_i) uint8. In training mode
    with ``targets`` (per image ``boxes`` (K, 4) float xyxy px, ``labels`` (K,) int64 class ids,
    ``masks`` (K, H, W) uint8) it returns torchvision's loss dict; in eval mode, per image a dict of
    ``boxes`` (K, 4), ``labels`` (K,), ``scores`` (K,) and ``masks`` (K, 1, H_i, W_i) in 0..1 at the
    input's size. Normalisation (ImageNet mean/std) happens in torchvision's transform.
    """

    output_kind = "detections"

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor | Sequence[torch.Tensor],
                targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        return self.net([im.float() / 255.0 for im in images], targets)

    @property
    def num_classes(self) -> int:
        """Classes the detector scores, background (id 0) included."""
        return int(self.net.roi_heads.box_predictor.cls_score.out_features)


class BottomUpNet(NormalizedSegmentationModel):
    """A dense smp network whose logits separate touching objects: (N, C + 1, H, W) for C classes
    (background and the thing classes, channel = class id) plus one boundary channel (index C).

    ``postprocess`` holds the settings the instance task splits objects with: ``boundary_width``
    (px of an object's rim trained as boundary), ``min_area`` (px; smaller objects are dropped),
    ``min_score`` (objects whose mean confidence is lower are dropped).
    """

    output_kind = "logits"

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float], postprocess: dict[str, Any]):
        super().__init__(net, mean, std)
        self.postprocess = dict(postprocess)


def build_maskrcnn(
    num_classes: int,
    variant: str = "resnet50_fpn",
    min_size: int = 256,
    max_size: int = 512,
    anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
    box_detections_per_img: int = 100,
    box_score_thresh: float = 0.05,
    trainable_backbone_layers: int | None = None,
    weights_path: str | None = None,
    weights_strict: bool = True,
    **kwargs: Any,
) -> MaskRCNNNet:
    """A Mask R-CNN for ``num_classes`` (background id 0 included; labels are class ids), from scratch.

    ``variant``: resnet50_fpn, resnet50_fpn_v2 (torchvision's improved recipe) or mobilenet_v3_fpn
    (MobileNetV3-Large + FPN built with torchvision's backbone utilities: several times cheaper on a
    CPU). ``min_size``/``max_size`` (px): torchvision resizes each image so its short side is
    ``min_size`` and its long side at most ``max_size`` (small values keep CPU runs small).
    ``anchor_sizes`` (px): one per feature level (small objects such as nuclei need 8-16 px anchors).
    Other keys go to torchvision's ``MaskRCNN``.
    """
    from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import mobilenet_backbone

    if variant not in MASKRCNN_VARIANTS:
        raise UserError(f"model.variant={variant}: unknown; expected one of {list(MASKRCNN_VARIANTS)}")
    sizes = tuple(int(s) for s in anchor_sizes)
    options = dict(min_size=int(min_size), max_size=int(max_size), box_detections_per_img=int(box_detections_per_img),
                   box_score_thresh=float(box_score_thresh), **kwargs)
    if variant == "mobilenet_v3_fpn":
        # Two feature maps plus a pooled level; every level sees every anchor size (torchvision's mobile recipe).
        backbone = mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=None, fpn=True,
                                      trainable_layers=6 if trainable_backbone_layers is None
                                      else int(trainable_backbone_layers),
                                      norm_layer=nn.BatchNorm2d)
        anchors = AnchorGenerator((sizes,) * 3, ((0.5, 1.0, 2.0),) * 3)
        net = MaskRCNN(backbone, num_classes=num_classes, rpn_anchor_generator=anchors, **options)
    else:
        if len(sizes) != 5:
            raise UserError(f"model.anchor_sizes={list(sizes)}: the ResNet-50 FPN has 5 feature levels; "
                            "give 5 sizes in px, e.g. [16, 32, 64, 128, 256]")
        build = maskrcnn_resnet50_fpn if variant == "resnet50_fpn" else maskrcnn_resnet50_fpn_v2
        net = build(weights=None, weights_backbone=None, num_classes=num_classes,
                    trainable_backbone_layers=trainable_backbone_layers, **options)
        # One size and three ratios per level, as torchvision's default (so its RPN head fits); v2's builder
        # makes its own generator and takes none as an argument, so it is replaced after construction.
        net.rpn.anchor_generator = AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * 5)
    model = MaskRCNNNet(net)
    if weights_path:
        load_weights_file(model, weights_path, weights_strict)
    return model


def build_bottom_up(
    num_classes: int,
    arch: str = "Unet",
    encoder: str = "resnet18",
    encoder_weights: str | None = None,
    weights_path: str | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    boundary_width: int = 2,
    min_area: int = 4,
    min_score: float = 0.0,
    weights_strict: bool = True,
    **kwargs: Any,
) -> BottomUpNet:
    """Any smp architecture with ``num_classes + 1`` output channels (the classes and a boundary
    channel); objects are split from its logits by the instance task (seeds from the class interiors,
    grown over the boundary by a watershed). ``boundary_width`` (px), ``min_area`` (px) and
    ``min_score`` (0..1) are the splitting settings."""
    if int(boundary_width) < 1:
        raise UserError(f"model.boundary_width={boundary_width}: expected at least 1 px")
    net = smp_network(num_classes + 1, arch, encoder, encoder_weights, **kwargs)
    model = BottomUpNet(net, mean, std, {"boundary_width": int(boundary_width), "min_area": int(min_area),
                                         "min_score": float(min_score)})
    if weights_path:
        load_weights_file(model, weights_path, weights_strict)
    return model


INSTANCE_BUILDERS = dict(zip(spec.INSTANCE_BUILDERS, (build_maskrcnn, build_bottom_up)))


def instance_model_from_spec(spec: dict[str, Any], num_classes: int, *, rebuild: bool = False) -> nn.Module:
    """The instance model a config (or a checkpoint's stored spec, ``rebuild=True``: nothing is read or
    downloaded, the stored weights follow) describes."""
    spec = dict(spec)
    target = spec.pop("_target_", None)
    if target not in INSTANCE_BUILDERS:
        raise UserError(f"model _target_={target}: not an instance model; task=instance needs one of "
                        f"{sorted(INSTANCE_BUILDERS)} (model=maskrcnn_r50, maskrcnn_r50_v2, maskrcnn_mobilenet, "
                        "bottom_up)")
    if rebuild:
        spec["weights_path"] = None
        if "encoder_weights" in spec:
            spec["encoder_weights"] = None
    try:
        return INSTANCE_BUILDERS[target](num_classes=num_classes, **spec)
    except TypeError as exc:
        raise UserError(f"model {target} with {sorted(spec)}: {exc}") from exc
