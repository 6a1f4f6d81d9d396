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
* ``cifar_resnet50``: deep-learning-base's CIFAR ResNet-50 (architectures/cifar_models):
  a 3x3 stride-1 stem without max-pooling, bottlenecks with ``shortcut`` projections, a
  4x4 average pool flattened (2048 features on 32 x 32 images; more on larger ones, as
  the reference's ``feat_scale``) and ``linear`` (``num_classes``, default 10).

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
default_cfgs["cifar_resnet50"] = dict(url="", mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010),
                                      input_size=(3, 32, 32), interpolation="bilinear", crop_pct=1.0,
                                      num_classes=10, first_conv="conv1", classifier="linear")
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


class CifarBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """deep-learning-base's CIFAR ResNet with Bottleneck blocks (see the module docstring), with timm's
    ``forward_features`` / ``forward_head`` so that pyred.Backbone reads its penultimate layer."""

    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), num_classes: int = 10, in_chans: int = 3,
                 **_: Any) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(64)
        cin, stages = 64, []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for b in range(n):
                blocks.append(CifarBottleneck(cin, planes, 2 if b == 0 and i > 0 else 1))
                cin = planes * CifarBottleneck.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.num_classes, self.num_features = num_classes, cin
        self.linear = nn.Linear(cin, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))  # type: ignore[no-any-return]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.avg_pool2d(x, 4).flatten(1)
        return x if pre_logits else self.linear(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def cifar_resnet50(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    from timm.models import build_model_with_cfg

    if pretrained:
        raise ValueError("cifar_resnet50: no pretrained weights are published; pass weights= the checkpoint file")
    return build_model_with_cfg(CifarResNet, "cifar_resnet50", False, **kwargs)


def wide_resnet50_4(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    return _resnet50_body("wide_resnet50_4", pretrained, base_width=256, **kwargs)


def resnet50_mrl(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    kwargs.setdefault("num_classes", 0)  # no classifier: the probed layer is the classifier's input
    model = add_blurpool(_resnet50_body("resnet50_mrl", pretrained, **kwargs))
    model.checkpoint_ignore = IGNORED_ON_LOAD  # type: ignore[assignment]
    return model


def _fixed_features(k: int) -> Any:
    def make(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if kwargs.pop("num_classes", 0):
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
        for fn in (wide_resnet50_4, resnet50_mrl, cifar_resnet50, *(_fixed_features(k) for k in FF_SIZES)):
            register_model(fn)
    _registered = True
