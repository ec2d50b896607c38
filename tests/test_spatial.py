"""Spatial views of token sequences and channels-last maps: what CAMs and feature maps read from transformers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import convscope as cs
from convscope.spatial import Layout, grid_fits, layout_for


def test_grids_of_a_picture() -> None:
    assert grid_fits((7, 7), (224, 224)) and grid_fits((8, 8), (299, 299)) and grid_fits((7, 10), (224, 320))
    assert not grid_fits((197, 197), (224, 224))  # an attention matrix: stride 1.14
    assert not grid_fits((49, 40), (224, 224))  # different strides on the two sides
    assert not grid_fits((7, 768), (224, 224))  # a channels-last map read channels-first


@pytest.mark.parametrize("shape, kind, grid, prefix", [
    ((512, 7, 7), "channels_first", (7, 7), 0),
    ((7, 7, 768), "channels_last", (7, 7), 0),
    ((56, 56, 96), "channels_last", (56, 56), 0),
    ((197, 768), "tokens", (14, 14), 1),  # ViT: the class token
    ((198, 192), "tokens", (14, 14), 2),  # DeiT distilled: class + distillation tokens
    ((196, 384), "tokens", (14, 14), 0),  # LeViT: no class token
    ((64, 8, 14, 14), "channels_first", (8, 14, 14), 0),  # a video layer (C, t, h, w)
])
def test_layouts(shape, kind, grid, prefix) -> None:
    layout = layout_for(None, shape, (224, 224))
    assert (layout.kind, layout.grid, layout.prefix) == (kind, grid, prefix)


def test_a_wrapper_marked_channels_last_is_read_so() -> None:
    marked = nn.Identity()
    marked.convscope_channels_last = True
    assert layout_for(marked, (32, 32, 32), (128, 128)).kind == "channels_last"
    assert layout_for(nn.Identity(), (32, 32, 32), (128, 128)).kind == "channels_first"


@pytest.mark.parametrize("layout, shape", [
    (Layout("tokens", (3, 4), 5, prefix=2), (2, 14, 5)),
    (Layout("channels_last", (3, 4), 5), (2, 3, 4, 5)),
])
def test_views_round_trip(layout: Layout, shape: tuple[int, ...]) -> None:
    output = torch.randn(shape)
    spatial = layout.to_spatial(output)
    assert spatial.shape == (2, 5, 3, 4)
    assert torch.equal(layout.from_spatial(spatial, output), output)
    if layout.kind == "tokens":  # token (row r, column c) is token prefix + r * w + c
        assert torch.equal(spatial[:, :, 1, 2], output[:, 2 + 1 * 4 + 2])


class TinyViT(nn.Module):
    """Patch embedding, a class token, one attention block, a class-token head: 4x4 patches of a 16x16 picture."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.norm1 = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.block_out = nn.Identity()
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)  # (B, 16, 8)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1)  # (B, 17, 8)
        y = self.norm1(tokens)
        tokens = self.block_out(tokens + self.attn(y, y, y, need_weights=False)[0])
        return self.head(tokens[:, 0])


def test_gradcam_on_tokens_equals_the_hand_computed_map() -> None:
    """Grad-CAM on the (B, 17, 8) output of norm1: the class token dropped, 16 patch tokens as a 4x4 map."""
    net = TinyViT().eval()
    x = torch.rand(1, 3, 16, 16)
    model = cs.Model(net, input_size=(16, 16), mean=None, std=None)
    assert cs.default_cam_layer(model, (3, 16, 16)).label == "norm1"  # block_out's patch tokens never reach the head
    result = cs.gradcam(model, x, target=1)
    captured = {}
    handle = net.norm1.register_forward_hook(lambda m, a, out: captured.setdefault("a", out))
    out = net(x)
    handle.remove()
    grad = torch.autograd.grad(out[0, 1], captured["a"])[0]
    acts = captured["a"][:, 1:].transpose(1, 2).reshape(1, 8, 4, 4)
    grads = grad[:, 1:].transpose(1, 2).reshape(1, 8, 4, 4)
    low = (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1, keepdim=True).clamp_min(0)
    expected = torch.nn.functional.interpolate(low, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(result.data, expected.detach(), rtol=1e-5, atol=1e-6)


def test_feature_maps_and_ablation_of_token_layers() -> None:
    net = TinyViT().eval()
    model = cs.Model(net, input_size=(16, 16), mean=None, std=None)
    x = torch.rand(2, 3, 16, 16)
    maps = cs.feature_maps(model, x, layer="norm1")
    assert maps.data.shape == (2, 8, 4, 4)
    ablation = cs.ablationcam(model, x, layer="norm1", target=0)  # edits go through the same view and back
    assert ablation.data.shape == (2, 1, 16, 16) and torch.isfinite(ablation.data).all()
