"""Random weights that make every layer matter: the "stress" initialisation of `load_model(random_init=True)`.

transformers' initialisation leaves much of a model idle: layer scales start at 1e-5 (S0's RepMixer blocks and
conv-FFNs add almost nothing), BatchNorm statistics are 0 / 1 while the student's hidden states are ~0.05 (the
normalised convolutions vanish beside the constants), LayerNorm affines are 1 / 0, biases 0, and weights of a
fixed std 0.02 make attention near-uniform and every head score near 0.25. A conversion that breaks any of
these still passes parity on such weights. This module moves each of them away from identity, seeded:

- weights (Linear, convolutions): rescaled to the variance-preserving std 1 / sqrt(fan_in), then each output
  channel by exp(0.5 N(0,1)); tables (token, position and query embeddings, reference boxes): rescaled to
  std 1, then each channel by exp(0.5 N(0,1));
- biases: N(0, 1) x 0.1 x the norm of their output channel's weights (the output's std for a unit input);
- layer scales (a parameter named layer_scale / gamma outside a norm): uniform in [0.1, 1];
- LayerNorm / GroupNorm / BatchNorm affines: weight exp(0.5 N(0,1)), bias N(0, 0.1^2);
- BatchNorm running statistics: measured on the layer's own input in one seeded probe pass (random token
  ids through the text encoder, the built-in photos at three contrasts through a student image trunk, as
  training would have left them), then the mean moved by 0.5 N(0,1) standard
  deviations and the variance scaled by exp(0.5 N(0,1)).

Anything else floating-point that the model learns fails loudly, so a new architecture cannot keep an idle
parameter unnoticed. Buffers that are not learned (rotary frequencies, position ids) are left as built.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter

import numpy as np
import torch
from torch import nn

from litetext.errors import LitetextError

STRESS = "stress"
TRANSFORMERS = "transformers"
INITIALISATIONS = (STRESS, TRANSFORMERS)

CHANNEL_SPREAD = 0.5  # log-std of the per-channel factors (weights, tables, norm weights, BN variances)
BIAS_SCALE = 0.1  # bias std relative to the output channel's weight norm
NORM_BIAS_STD = 0.1
LAYER_SCALE_RANGE = (0.1, 1.0)
STREAM_OFFSET = 1_000_003  # any fixed number
BN_MEAN_SHIFT = 0.5  # BatchNorm running mean moved by this many standard deviations (times N(0,1))
PROBE_PHOTOS = ("chelsea.png", "rocket.jpg")  # litetext/assets: image trunks' BatchNorm statistics (_probe_photos)
PROBE_CONTRASTS = (0.5, 1.0, 2.0)  # the probe photos' normalised pixels are scaled by each

_LAYER_SCALE_NAME = re.compile(r"^(layer_scale|gamma)\w*$")
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._BatchNorm)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# Buffers a model computes rather than learns.
_NOT_LEARNED = {"position_ids", "inv_freq", "original_inv_freq", "num_batches_tracked"}


def check_initialisation(name: str) -> str:
    if name not in INITIALISATIONS:
        raise LitetextError(f"unknown initialisation {name!r}; choose {' or '.join(INITIALISATIONS)}")
    return name


@torch.no_grad()
def stress_initialise(model: nn.Module, seed: int) -> Counter:
    """Draw the stress weights into `model` (in place, eval mode). Returns how many tensors of each kind
    it drew: weight, table, bias, layer_scale, norm_weight, norm_bias, batchnorm_statistics."""
    model.eval()
    counts: Counter = Counter()
    generators: dict[str, torch.Generator] = {}
    for module_name, module in model.named_modules():
        # One stream per top-level part (text_encoder, vision_encoder, ...), apart from the global one the model
        # was built with: a part draws the same weights whatever else the model holds (a text-only load's text
        # encoder is the full model's).
        part = module_name.split(".", 1)[0]
        if part not in generators:
            generators[part] = _stream(seed, part)
        generator = generators[part]
        for name, tensor in module.named_parameters(recurse=False):
            kind = _draw(module, name, tensor, generator)
            if kind is None:
                raise LitetextError(
                    f"stress initialisation does not know parameter {module_name}.{name} of "
                    f"{type(module).__name__} {tuple(tensor.shape)}; teach litetext/models/stress_init.py its kind"
                )
            counts[kind] += 1
        for name, tensor in module.named_buffers(recurse=False):
            if tensor.is_floating_point() and name not in _NOT_LEARNED and not _is_batchnorm(module):
                raise LitetextError(f"stress initialisation does not know buffer {module_name}.{name}")
    counts["batchnorm_statistics"] = _draw_batchnorm_statistics(model, _stream(seed, "batchnorm statistics"))
    return counts


def _probe_photos(size: int) -> torch.Tensor:
    """What BatchNorm statistics of image trunks are measured on: the built-in photos (PROBE_PHOTOS), preprocessed
    as the vision encoder's input, each at three contrasts (normalised pixels x 0.5, 1, 2), as a training set's variety would
    leave them. Random pixels would not do: linear attention (EfficientViT's LiteMLA) averages white noise to a
    near-constant map, so its BatchNorms measure variances near 0 and a photo then grows in every block (3.5e8
    at the full-size EV-M's features, past fp16's 65504). Nor would the photos alone: a BatchNorm whose channel
    mean is large beside its std turns any change of input scale into a shift, and the next blocks amplify it
    (1.4e5 on a photo outside the probe, measured once). With the three contrasts the full-size EV-M peaks at
    142 on unseen photos at 336 px (benchmarks/results/stress_activations.json). What it costs: normalised to
    photos, a random TinyViT trunk is ill-conditioned (its depthwise local_conv on the main path of every block
    amplifies a perturbation 1.5-1.9x, measured once; fp16-rounded weights move TV-M's features to cosine
    0.9988 at 1008 px, benchmarks/results/conditioning.json). Random pixels had hidden that by shrinking every
    block's output."""
    from litetext.calibration.images import read_rgb
    from litetext.files import builtin_asset
    from litetext.image_resize import pixel_values

    photos = torch.from_numpy(np.concatenate([pixel_values(read_rgb(builtin_asset(name)), size)
                                              for name in PROBE_PHOTOS]))
    return torch.cat([photos * contrast for contrast in PROBE_CONTRASTS])


def _stream(seed: int, part: str) -> torch.Generator:
    return torch.Generator().manual_seed(STREAM_OFFSET + seed + zlib.crc32(part.encode()))


def _normal(shape, generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator)


def _channel_factors(n: int, generator) -> torch.Tensor:
    return torch.exp(CHANNEL_SPREAD * _normal(n, generator))


def _is_batchnorm(module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def _is_norm(module) -> bool:
    return isinstance(module, _NORMS) or type(module).__name__.endswith("Norm")  # RMSNorm, custom LayerNorms


def _draw(module: nn.Module, name: str, tensor: torch.Tensor, generator) -> str | None:
    if _is_norm(module):
        if name == "weight":
            tensor.copy_(_channel_factors(tensor.numel(), generator).view_as(tensor))
            return "norm_weight"
        if name == "bias":
            tensor.copy_(NORM_BIAS_STD * _normal(tensor.shape, generator))
            return "norm_bias"
        return None
    if _LAYER_SCALE_NAME.match(name):
        low, high = LAYER_SCALE_RANGE
        tensor.copy_(low + (high - low) * torch.rand(tensor.shape, generator=generator))
        return "layer_scale"
    if name == "bias" and isinstance(getattr(module, "weight", None), torch.Tensor):
        # Drawn after the weight (named_parameters gives weight first), relative to its output channels.
        weight = module.weight
        axis = _output_axis(module)
        norms = weight.transpose(0, axis).reshape(weight.shape[axis], -1).norm(dim=1)
        if isinstance(module, _TRANSPOSED):
            norms = norms.repeat(tensor.numel() // norms.numel())  # groups
        tensor.copy_(BIAS_SCALE * norms * _normal(tensor.shape, generator))
        return "bias"
    if tensor.dim() >= 2:
        # Weights take the variance-preserving scale (transformers' fixed std 0.02 shrinks every layer of a
        # narrow model and leaves attention near-uniform); tables (token, position, query embeddings, reference
        # boxes) unit scale, as large as the activations they join (at 0.02 every DETR query and reference box
        # is alike, and so is every score). Zero-initialised tensors are drawn afresh.
        weight = isinstance(module, (nn.Linear, *_CONVS, *_TRANSPOSED))
        target = 1.0 / math.sqrt(_fan_in(module)) if weight else 1.0
        std = float(tensor.std())
        if std > 0:
            tensor.mul_(target / std)
        else:
            tensor.copy_(target * _normal(tensor.shape, generator))
        axis = _output_axis(module)
        shape = [1] * tensor.dim()
        shape[axis] = tensor.shape[axis]
        tensor.mul_(_channel_factors(tensor.shape[axis], generator).view(shape))
        return "weight" if weight else "table"
    return None


def _output_axis(module: nn.Module) -> int:
    if isinstance(module, (nn.Linear, *_CONVS)):
        return 0
    if isinstance(module, _TRANSPOSED):
        return 1  # [in, out / groups, *kernel]
    return -1  # tables: one row per token / position, channels last


def _fan_in(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    kernel = math.prod(module.kernel_size)
    if isinstance(module, _TRANSPOSED):
        # each output pixel sums in_channels x (kernel / stride^d) taps
        return max(1, module.in_channels * kernel // math.prod(module.stride))
    return module.in_channels // module.groups * kernel


def _draw_batchnorm_statistics(model: nn.Module, generator) -> int:
    """Set each BatchNorm's running statistics from its own input in one probe pass, in the order the layers
    run (so each sees the statistics drawn before it), then move them away from the measured ones. The text
    encoder's are probed with random token ids, then the vision encoder's (student image trunks) with the
    built-in photos (_probe_photos); the text part's come first, so a text-only load draws the same."""
    norms = {name: m for name, m in model.named_modules() if _is_batchnorm(m)}
    if not norms:
        return 0
    outside = [name for name in norms if not name.startswith(("text_encoder.", "vision_encoder."))]
    if outside:
        raise LitetextError(f"stress initialisation probes BatchNorm inputs through the text and vision encoders "
                            f"only, not {', '.join(outside)}")
    drawn = []

    def measure(module, args):
        x = args[0]
        dims = [d for d in range(x.dim()) if d != 1]
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        std = var.clamp_min(module.eps).sqrt()
        module.running_mean.copy_(mean + BN_MEAN_SHIFT * std * _normal(mean.shape, generator))
        module.running_var.copy_(var.clamp_min(module.eps) * _channel_factors(var.numel(), generator))
        drawn.append(module)

    hooks = [m.register_forward_pre_hook(measure) for m in norms.values()]
    try:
        if any(name.startswith("text_encoder.") for name in norms):
            config = model.text_encoder.config
            ids = torch.randint(1, config.vocab_size, (8, config.max_position_embeddings), generator=generator)
            model.text_encoder(input_ids=ids)
        if any(name.startswith("vision_encoder.") for name in norms):
            size = model.config.vision_config.backbone_config.image_size
            model.vision_encoder(pixel_values=_probe_photos(size))
    finally:
        for hook in hooks:
            hook.remove()
    if len(drawn) != len(norms):
        raise LitetextError(f"stress initialisation: the probe pass reached {len(drawn)} of {len(norms)} BatchNorms")
    return 2 * len(drawn)
