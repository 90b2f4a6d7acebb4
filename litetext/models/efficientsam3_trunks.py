"""The image trunks of EfficientSAM3's students: EfficientViT (MIT, b0/b1/b2), RepViT (m0.9/m1.1/m2.3) and
TinyViT (5m/11m/21m), written for litetext.

Why not timm (which has all three): timm requires torchvision, and installing it from PyPI replaces the CPU
build of torch with another torch (pip resolves torchvision's `torch==X` pin); a PyPI torchvision beside a
CPU torch does not import. These modules are therefore the project's own. Their parameter names follow the
state-dict layout of upstream EfficientSAM3 checkpoints (the `model.` part of
`trunk.model.backbone.model.<name>`, see litetext/models/efficientsam3.py), so the key map is a prefix
rename; the tests pin every name and shape, and benchmarks/efficientsam3_upstream.py checks the forward
pass against upstream's own modules.

Every trunk maps pixel_values [B, 3, S, S] to one feature map [B, C, h, w]:
    EfficientViT  h = S/32 (stride-2 stem and four stride-2 stages)
    RepViT        h = S/32
    TinyViT       h = ceil(S/32) computed stage by stage as (h - 1) // 2 + 1 (1008 px -> 252, 126, 63, 32)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------------


class ConvBN(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d; state-dict names `c.*`, `bn.*` (RepViT, TinyViT)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1):
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


def _round_to_8(value: float, round_limit: float = 0.9) -> int:
    """Channels rounded to the nearest multiple of 8, never below 8 nor (with round_limit) 10% below value."""
    rounded = max(8, int(value + 4) // 8 * 8)
    return rounded + 8 if rounded < round_limit * value else rounded


class SqueezeExcite(nn.Module):
    """Channel gate: mean over space -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid, reduction 1/4."""

    def __init__(self, channels: int):
        super().__init__()
        reduced = _round_to_8(channels * 0.25, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


# ---------------------------------------------------------------------------------------------------------
# RepViT
# ---------------------------------------------------------------------------------------------------------


class RepVGGDepthwise(nn.Module):
    """BN(dw3x3-BN(x) + dw1x1(x) + x): the train-time form of RepViT's depthwise token mixer."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = ConvBN(channels, channels, 3, groups=channels)
        self.conv1 = nn.Conv2d(channels, channels, 1, groups=channels)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn((self.conv(x) + self.conv1(x)) + x)


class Residual(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.m = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)


def _channel_mixer(channels: int) -> Residual:
    # 1x1 expand (2x) -> GELU -> 1x1 project, with a skip
    return Residual(nn.Sequential(ConvBN(channels, 2 * channels), nn.GELU(), ConvBN(2 * channels, channels)))


class RepViTBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, squeeze_excite: bool):
        super().__init__()
        se = SqueezeExcite(cin) if squeeze_excite else nn.Identity()
        if stride == 2:  # downsampling: dw3x3 s2 -> (SE) -> 1x1 to the new width
            self.token_mixer = nn.Sequential(ConvBN(cin, cin, 3, 2, groups=cin), se, ConvBN(cin, cout))
        else:
            if cin != cout:
                raise ValueError("a stride-1 RepViT block keeps its width")
            self.token_mixer = nn.Sequential(RepVGGDepthwise(cin), se)
        self.channel_mixer = _channel_mixer(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.token_mixer(x))


class RepViT(nn.Module):
    """`features.0` is the stem (two 3x3 stride-2 ConvBN with a GELU), `features.1..` the blocks. Within a
    stage, blocks alternate squeeze-excite on / off, starting on, and the stage's last block has none; each
    stage after the first opens with a stride-2 block without it."""

    def __init__(self, widths: tuple[int, ...], depths: tuple[int, ...]):
        super().__init__()
        stem = nn.Sequential(ConvBN(3, widths[0] // 2, 3, 2), nn.GELU(), ConvBN(widths[0] // 2, widths[0], 3, 2))
        layers: list[nn.Module] = [stem]
        cin = widths[0]
        for stage, (width, depth) in enumerate(zip(widths, depths)):
            width = _round_to_8(width)
            if stage > 0:
                layers.append(RepViTBlock(cin, width, 2, False))
            for j in range(depth):
                layers.append(RepViTBlock(width, width, 1, j % 2 == 0 and j < depth - 1))
            cin = width
        self.features = nn.ModuleList(layers)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.features:
            x = layer(x)
        return x


# ---------------------------------------------------------------------------------------------------------
# TinyViT
# ---------------------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.seq = nn.Sequential(ConvBN(3, width // 2, 3, 2), nn.GELU(), ConvBN(width // 2, width, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """TinyViT's inverted residual: GELU(x + 1x1(GELU(dw3x3(GELU(1x1(x))))))."""

    def __init__(self, channels: int, expand: float = 4.0):
        super().__init__()
        hidden = int(channels * expand)
        self.conv1 = ConvBN(channels, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """[B, C, H, W] or tokens [B, H*W, C] -> tokens at half resolution (stride-2 depthwise conv)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = ConvBN(cin, cout)
        self.conv2 = ConvBN(cout, cout, 3, 2, groups=cout)
        self.conv3 = ConvBN(cout, cout)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        if x.ndim == 3:
            x = x.view(x.shape[0], hw[0], hw[1], -1).permute(0, 3, 1, 2)
        x = self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


class WindowAttention(nn.Module):
    """Multi-head attention inside one window of `window` x `window` tokens, with a learned bias per head
    and per |dy|, |dx| offset (LeViT style)."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        points = list(itertools.product(range(window), range(window)))
        offsets: dict[tuple[int, int], int] = {}
        index = [offsets.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(offsets)) for a in points for b in points]
        self.attention_biases = nn.Parameter(torch.zeros(heads, len(offsets)))
        self.register_buffer("bias_index", torch.tensor(index).view(len(points), len(points)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, C]
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.heads, 3 * self.head_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.head_dim, dim=3)  # each [B, heads, N, head_dim]
        attn = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5 + self.attention_biases[:, self.bias_index]
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, -1)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention (windows padded at the bottom/right edge) -> depthwise 3x3 ConvBN -> MLP."""

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, 3, groups=dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:  # x [B, H*W, C]
        (h, w), ws = hw, self.window
        b, n, c = x.shape
        if h == ws and w == ws:
            attended = self.attn(x)
        else:
            pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
            grid = F.pad(x.view(b, h, w, c), (0, 0, 0, pad_r, 0, pad_b))
            nh, nw = (h + pad_b) // ws, (w + pad_r) // ws
            windows = grid.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
            attended = self.attn(windows).view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, nh * ws, nw * ws, c)
            attended = attended[:, :h, :w].reshape(b, n, c)
        x = x + attended
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    def __init__(self, dim: int, depth: int, out_dim: int):
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x, hw)


class AttentionStage(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, window: int, out_dim: int | None):
        super().__init__()
        self.blocks = nn.ModuleList(TinyViTBlock(dim, heads, window) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim) if out_dim is not None else None

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        for block in self.blocks:
            x = block(x, hw)
        return self.downsample(x, hw) if self.downsample is not None else (x, hw)


class TinyViT(nn.Module):
    """`patch_embed` (stride 4), `layers.0` MBConv stage, `layers.1..3` window-attention stages; each stage
    but the last ends with a stride-2 PatchMerging into the next width."""

    def __init__(self, widths: tuple[int, ...], depths: tuple[int, ...], heads: tuple[int, ...],
                 windows: tuple[int, ...]):
        super().__init__()
        self.patch_embed = PatchEmbed(widths[0])
        stages: list[nn.Module] = [ConvStage(widths[0], depths[0], widths[1])]
        for i in range(1, len(widths)):
            out = widths[i + 1] if i + 1 < len(widths) else None
            stages.append(AttentionStage(widths[i], depths[i], heads[i], windows[i], out))
        self.layers = nn.ModuleList(stages)
        self.out_channels = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        hw = (x.shape[2], x.shape[3])
        for stage in self.layers:
            x, hw = stage(x, hw)
        return x.view(x.shape[0], hw[0], hw[1], -1).permute(0, 3, 1, 2).contiguous()  # [B, C, h, w]


# ---------------------------------------------------------------------------------------------------------
# EfficientViT (MIT, the "b" series): BatchNorm, Hardswish, ReLU linear attention
# ---------------------------------------------------------------------------------------------------------


class ConvLayer(nn.Module):
    """Conv2d (same padding) -> optional BatchNorm -> optional Hardswish; names `conv`, `norm`."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 bias: bool = False, norm: bool = True, act: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(cout) if norm else None
        self.act = nn.Hardswish() if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.act(x) if self.act is not None else x


class DSConv(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.depth_conv = ConvLayer(channels, channels, 3, groups=channels, act=True)
        self.point_conv = ConvLayer(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(x))


class EVMBConv(nn.Module):
    """1x1 expand -> dw3x3 (stride) -> 1x1 project. `fewer_norm`: the first two convs have a bias and no norm."""

    def __init__(self, cin: int, cout: int, stride: int, expand: float, fewer_norm: bool):
        super().__init__()
        mid = round(cin * expand)
        self.inverted_conv = ConvLayer(cin, mid, bias=fewer_norm, norm=not fewer_norm, act=True)
        self.depth_conv = ConvLayer(mid, mid, 3, stride, groups=mid, bias=fewer_norm, norm=not fewer_norm, act=True)
        self.point_conv = ConvLayer(mid, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


class ResidualBlock(nn.Module):
    def __init__(self, main: nn.Module, skip: bool):
        super().__init__()
        self.main = main
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + x if self.skip else self.main(x)


class LiteMLA(nn.Module):
    """Multi-scale ReLU linear attention: q, k, v from a 1x1 conv, plus a 5x5-aggregated copy (a second set
    of heads); attention = relu(q) (relu(k)^T v) / (relu(q) sum relu(k)), computed in fp32."""

    def __init__(self, channels: int, dim: int, eps: float = 1e-15):
        super().__init__()
        self.dim, self.eps = dim, eps
        heads = channels // dim
        total = heads * dim
        self.qkv = ConvLayer(channels, 3 * total, norm=False)
        self.aggreg = nn.ModuleList([nn.Sequential(
            nn.Conv2d(3 * total, 3 * total, 5, padding=2, groups=3 * total, bias=False),
            nn.Conv2d(3 * total, 3 * total, 1, groups=3 * heads, bias=False),
        )])
        self.proj = ConvLayer(2 * total, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv = torch.cat([qkv, self.aggreg[0](qkv)], dim=1)
        b, _, h, w = qkv.shape
        qkv = qkv.float().reshape(b, -1, 3 * self.dim, h * w)  # [B, heads, 3*dim, N]
        q, k, v = qkv[:, :, : self.dim], qkv[:, :, self.dim : 2 * self.dim], qkv[:, :, 2 * self.dim :]
        q, k = F.relu(q), F.relu(k)
        if h * w > self.dim:  # linear form: a row of ones appended to v carries the normalizer
            v = F.pad(v, (0, 0, 0, 1), mode="constant", value=1.0)
            out = (v @ k.transpose(-1, -2)) @ q  # [B, heads, dim+1, N]
            out = out[:, :, :-1] / (out[:, :, -1:] + self.eps)
        else:  # tiny maps: the quadratic form
            attn = k.transpose(-1, -2) @ q  # [B, heads, N, N]
            out = v @ (attn / (attn.sum(dim=2, keepdim=True) + self.eps))
        return self.proj(out.to(x.dtype).reshape(b, -1, h, w))


class EfficientViTBlock(nn.Module):
    def __init__(self, channels: int, dim: int, expand: float = 4.0):
        super().__init__()
        self.context_module = ResidualBlock(LiteMLA(channels, dim), skip=True)
        self.local_module = ResidualBlock(EVMBConv(channels, channels, 1, expand, fewer_norm=True), skip=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


class OpSequential(nn.Module):
    def __init__(self, ops: list[nn.Module]):
        super().__init__()
        self.op_list = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


class EfficientViT(nn.Module):
    """`input_stem` (3x3 s2 conv + DSConv residuals), two MBConv stages, two stages of EfficientViT blocks
    each opened by a stride-2 MBConv."""

    def __init__(self, widths: tuple[int, ...], depths: tuple[int, ...], dim: int, expand: float = 4.0):
        super().__init__()
        stem: list[nn.Module] = [ConvLayer(3, widths[0], 3, 2, act=True)]
        stem += [ResidualBlock(DSConv(widths[0]), skip=True) for _ in range(depths[0])]
        self.input_stem = OpSequential(stem)
        stages: list[nn.Module] = []
        cin = widths[0]
        for width, depth in zip(widths[1:3], depths[1:3]):
            ops = [ResidualBlock(EVMBConv(cin if i == 0 else width, width, 2 if i == 0 else 1, expand, False),
                                 skip=i > 0) for i in range(depth)]
            stages.append(OpSequential(ops))
            cin = width
        for width, depth in zip(widths[3:], depths[3:]):
            ops = [ResidualBlock(EVMBConv(cin, width, 2, expand, fewer_norm=True), skip=False)]
            ops += [EfficientViTBlock(width, dim, expand) for _ in range(depth)]
            stages.append(OpSequential(ops))
            cin = width
        self.stages = nn.ModuleList(stages)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


# ---------------------------------------------------------------------------------------------------------
# The nine stage-1 trunks
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrunkSpec:
    name: str  # litetext's short name, e.g. "ev-b1"
    family: str  # "efficientvit", "repvit" or "tinyvit" (upstream's backbone_type)
    variant: str  # upstream's model_name ("b1", "m1.1", "11m")
    upstream_config: str  # the stage-1 config that trains it (stage1/configs/*.yaml)

    def build(self) -> nn.Module:
        return _BUILDERS[(self.family, self.variant)]()


_BUILDERS = {
    ("efficientvit", "b0"): lambda: EfficientViT((8, 16, 32, 64, 128), (1, 2, 2, 2, 2), dim=16),
    ("efficientvit", "b1"): lambda: EfficientViT((16, 32, 64, 128, 256), (1, 2, 3, 3, 4), dim=16),
    ("efficientvit", "b2"): lambda: EfficientViT((24, 48, 96, 192, 384), (1, 3, 4, 4, 6), dim=32),
    ("repvit", "m0.9"): lambda: RepViT((48, 96, 192, 384), (3, 3, 15, 2)),
    ("repvit", "m1.1"): lambda: RepViT((64, 128, 256, 512), (3, 3, 13, 2)),
    ("repvit", "m2.3"): lambda: RepViT((80, 160, 320, 640), (7, 7, 35, 2)),
    ("tinyvit", "5m"): lambda: TinyViT((64, 128, 160, 320), (2, 2, 6, 2), (2, 4, 5, 10), (7, 7, 14, 7)),
    ("tinyvit", "11m"): lambda: TinyViT((64, 128, 256, 448), (2, 2, 6, 2), (2, 4, 8, 14), (7, 7, 14, 7)),
    ("tinyvit", "21m"): lambda: TinyViT((96, 192, 384, 576), (2, 2, 6, 2), (3, 6, 12, 18), (7, 7, 14, 7)),
}

TRUNKS: dict[str, TrunkSpec] = {
    t.name: t
    for t in [
        TrunkSpec("ev-b0", "efficientvit", "b0", "es_ev_s"),
        TrunkSpec("ev-b1", "efficientvit", "b1", "es_ev_m"),
        TrunkSpec("ev-b2", "efficientvit", "b2", "es_ev_l"),
        TrunkSpec("rv-m0.9", "repvit", "m0.9", "es_rv_s"),
        TrunkSpec("rv-m1.1", "repvit", "m1.1", "es_rv_m"),
        TrunkSpec("rv-m2.3", "repvit", "m2.3", "es_rv_l"),
        TrunkSpec("tv-5m", "tinyvit", "5m", "es_tv_s"),
        TrunkSpec("tv-11m", "tinyvit", "11m", "es_tv_m"),
        TrunkSpec("tv-21m", "tinyvit", "21m", "es_tv_l"),
    ]
}
