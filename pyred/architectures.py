"""The paper's networks that timm does not have, registered as timm models (``register()``).

* ``wide_resnet50_4``: ResNet-50 with 4x wide bottlenecks (``base_width=256``), the
  robustness library's WRN-50-4 (Salman et al. 2020).
* ``resnet50_mrl``: the Matryoshka (MRL, Kusupati et al. 2022) ResNet-50 -- every
  strided convolution with at least 16 input channels reads a 3x3 [1,2,1] x [1,2,1] / 16
  depthwise blur of its input first (FFCV's BlurPool; the convolution's weights sit
  under ``<name>.conv.``, the filter in ``<name>.blur_filter``).
* ``resnet50_ff8`` ... ``resnet50_ff2048``: the same network trained with a fixed
  feature layer of k units: its classifier reads the first k of the 2048 pooled
  features, so the probed layer (``dim``) is those k features.

The MRL and fixed-feature models have no classifier here (pyred probes the layer below
it); the ``fc.*`` tensors of their checkpoints (MRL's nested heads, the fixed-feature
heads) are ignored on loading, as the reference code's non-strict loading did.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FF_SIZES = (8, 16, 32, 64, 128, 256, 512, 1024, 2048)
IGNORED_ON_LOAD = ("fc.",)  # checkpoint keys a model without a classifier does not hold

_IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), input_size=(3, 224, 224),
                 interpolation="bilinear", crop_pct=0.875, num_classes=1000, first_conv="conv1", classifier="fc")
default_cfgs: dict[str, dict[str, Any]] = {name: dict(url="", **_IMAGENET) for name in (
    "wide_resnet50_4", "resnet50_mrl", *(f"resnet50_ff{k}" for k in FF_SIZES))}
_registered = False


class BlurPoolConv2d(nn.Module):
    """``conv`` applied to a 3x3 binomial blur of its input (one filter per input channel)."""

    blur_filter: torch.Tensor

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        kernel = torch.tensor([1.0, 2.0, 1.0])
        blur = (kernel[:, None] * kernel[None, :] / 16.0).expand(conv.in_channels, 1, 3, 3).contiguous()
        self.conv = conv
        self.register_buffer("blur_filter", blur)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blurred = F.conv2d(x, self.blur_filter, stride=1, padding=1, groups=self.conv.in_channels)
        return self.conv(blurred)  # type: ignore[no-any-return]  # nn.Conv2d's forward is untyped


def add_blurpool(module: nn.Module) -> nn.Module:
    """Wraps (in place) every strided Conv2d with >= 16 input channels in a BlurPoolConv2d; returns module."""
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d) and max(child.stride) > 1 and child.in_channels >= 16:
            setattr(module, name, BlurPoolConv2d(child))
        else:
            add_blurpool(child)
    return module


def _resnet50_body(name: str, pretrained: bool, cls: Any = None, **kwargs: Any) -> nn.Module:
    from timm.models import build_model_with_cfg
    from timm.models.resnet import Bottleneck, ResNet

    if pretrained:
        raise ValueError(f"{name}: timm has no pretrained weights for this paper model; pass weights= the "
                         "checkpoint file (see pyred.paper.MODELS)")
    return build_model_with_cfg(cls or ResNet, name, False, block=Bottleneck, layers=[3, 4, 6, 3], **kwargs)  # type: ignore[no-any-return]


def _fixed_feature_resnet() -> Any:
    from timm.models.resnet import ResNet

    class FixedFeatureResNet(ResNet):
        """A ResNet whose classifier reads only the first ``feature_k`` pooled features: those are its
        penultimate layer (``forward_head(pre_logits=True)``)."""

        def __init__(self, *, feature_k: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.feature_k = feature_k
            self.num_features = self.head_hidden_size = feature_k

        def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
            x = super().forward_head(x, pre_logits=True)[:, :self.feature_k]
            return x if pre_logits else self.fc(x)

    return FixedFeatureResNet


def wide_resnet50_4(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    return _resnet50_body("wide_resnet50_4", pretrained, base_width=256, **kwargs)


def resnet50_mrl(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    kwargs.setdefault("num_classes", 0)  # no classifier: the probed layer is the classifier's input
    model = add_blurpool(_resnet50_body("resnet50_mrl", pretrained, **kwargs))
    model.checkpoint_ignore = IGNORED_ON_LOAD  # type: ignore[assignment]
    return model


def _fixed_features(k: int) -> Any:
    def make(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if kwargs.get("num_classes"):
            raise ValueError(f"resnet50_ff{k}: pyred builds it without a classifier (num_classes=0)")
        model: Any = add_blurpool(_resnet50_body(f"resnet50_ff{k}", pretrained, _fixed_feature_resnet(),
                                                 feature_k=k, num_classes=0, **kwargs))
        model.checkpoint_ignore = IGNORED_ON_LOAD
        return model  # type: ignore[no-any-return]

    make.__name__ = make.__qualname__ = f"resnet50_ff{k}"
    make.__module__ = __name__
    return make


def register() -> None:
    """Registers the models above with timm (once); ``timm.create_model("resnet50_ff64")`` then works."""
    global _registered
    if _registered:
        return
    import warnings

    from timm.models import register_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm warns when a name is registered twice (a reloaded module)
        for fn in (wide_resnet50_4, resnet50_mrl, *(_fixed_features(k) for k in FF_SIZES)):
            register_model(fn)
    _registered = True
