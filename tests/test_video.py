"""Video and 3-D CNNs (Conv3d, inputs (B, C, T, H, W)): every attribution method works on a clip or refuses in one
line, maps come back (B, 1, T, H, W), the model and the clip are left as they were, and render draws frame strips
and animations.

Real models with random weights: torchvision's r3d_18, mc3_18 and r2plus1d_18 on (1, 3, 4, 56, 56) clips (a few
methods each: they are heavy on two CPU cores) and a small 3-D medical-style CNN on (1, 1, 16, 32, 32) volumes (every
method). Analytic models check where the maps must and must not be.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from PIL import Image
from test_state import assert_unchanged, snapshot
from torch import nn

import convscope as cs
from convscope import render

TORCHVISION_VIDEO = ("r3d_18", "mc3_18", "r2plus1d_18")
CLIP = (1, 3, 4, 56, 56)
VOLUME = (1, 1, 16, 32, 32)
CAMS = ("gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam", "ablationcam", "cam")
GRADIENTS = ("saliency", "input_x_gradient", "guided_backprop", "deconvnet", "integrated_gradients", "smoothgrad")
QUICK = {"integrated_gradients": {"steps": 2}, "smoothgrad": {"samples": 2}, "scorecam": {"top_channels": 3},
         "ablationcam": {"top_channels": 3}, "occlusion": {"window": 0.5, "stride": 0.5}}


def seeded(build: Any) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build().eval()


def medical_cnn(classes: int = 3) -> nn.Sequential:
    """A small 3-D CNN for 1-channel volumes (CT/MRI-like): two Conv3d blocks, global pooling, a linear head."""
    return nn.Sequential(
        nn.Conv3d(1, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(), nn.MaxPool3d(2),
        nn.Conv3d(8, 16, 3, padding=1), nn.BatchNorm3d(16), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(16, classes))


def random_batch(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def video_models() -> dict[str, nn.Module]:
    import torchvision.models.video as video

    return {name: seeded(lambda name=name: getattr(video, name)(weights=None)) for name in TORCHVISION_VIDEO}


@pytest.fixture(scope="module")
def medical() -> cs.Model:
    net = seeded(medical_cnn)
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so a changed buffer would show
        for module in net.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return cs.Model(net, input_size=(16, 32, 32), mean=None, std=None, labels=["healthy", "lesion", "other"],
                    name="medical3d")


def run_checked(method: str, model: Any, x: torch.Tensor, **options: Any) -> cs.Result:
    """``cs.<method>`` with the model's and the clip's state compared before and after."""
    module = model.module if isinstance(model, cs.Model) else model
    before = snapshot(module, x)
    result = getattr(cs, method)(model, x, **{**QUICK.get(method, {}), **options})
    assert_unchanged(before, module, x)
    return result


def assert_video_result(result: cs.Result, x: torch.Tensor) -> None:
    """Shape (B, 1 or C, T, H, W) of the clip, finite values with spread."""
    batch, channels, *size = x.shape
    assert tuple(result.data.shape[2:]) == tuple(size) and result.data.shape[0] == batch
    assert result.data.shape[1] == (channels if result.method in GRADIENTS else 1)
    assert result.kind == ("pixels" if result.method in GRADIENTS else "map")
    assert torch.isfinite(result.data).all()
    assert float(result.data.float().std()) > 0, f"{result.method}: a constant map"


# -- torchvision video models ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "gradcam", "gradcam_pp", "eigencam", "scorecam",
                                    "ablationcam", "occlusion"])
@pytest.mark.parametrize("arch", TORCHVISION_VIDEO)
def test_torchvision_video_models(video_models, arch, method):
    model, x = video_models[arch], random_batch(CLIP)
    layer = {"layer": "layer4"} if method in CAMS else {}
    result = run_checked(method, model, x, **layer)
    assert_video_result(result, x)
    assert result.data.shape[1] == (3 if method in GRADIENTS else 1)
    if method in CAMS:
        assert result.layer == "layer4" and result.meta["layer_shape"][0] == 512


def test_the_default_cam_layer_of_a_video_model(video_models):
    wrapped = cs.Model(video_models["r3d_18"], input_size=CLIP[2:], mean=(0.43, 0.39, 0.38), std=(0.23, 0.22, 0.22))
    result = run_checked("gradcam", wrapped, random_batch(CLIP))
    assert result.layer == "layer4" and tuple(result.data.shape) == (1, 1, *CLIP[2:])


# -- a 3-D medical-style CNN: every method -----------------------------------------------------------------------
@pytest.mark.parametrize("method", [*GRADIENTS, *CAMS, "occlusion"])
def test_every_method_on_a_3d_medical_cnn(medical, method):
    x = random_batch((2, *VOLUME[1:]))
    layer = {"layer": "6"} if method in CAMS else {}  # the second block's ReLU: (B, 16, 8, 16, 16)
    result = run_checked(method, medical, x, **layer)
    assert_video_result(result, x)
    assert result.labels is not None and set(result.labels) <= {"healthy", "lesion", "other"}


def test_guided_gradcam_is_guided_backprop_inside_the_cam(medical):
    x = random_batch(VOLUME)
    result = run_checked("guided_gradcam", medical, x, layer="6")
    assert tuple(result.data.shape) == VOLUME and result.kind == "pixels"


@pytest.mark.parametrize("method", ["rise", "superpixels"])
def test_picture_masking_methods_refuse_a_video_in_one_line(medical, method):
    with pytest.raises(cs.InputError, match="occlusion") as error:
        getattr(cs, method)(medical, random_batch(VOLUME))
    assert "\n" not in str(error.value)


def test_a_2d_layer_of_a_video_model_is_refused_in_one_line():
    class FrameNet(nn.Module):  # a per-frame 2-D CNN: its maps have no time axis
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            frames = x.mean(dim=2)  # (B, C, H, W)
            return self.head(self.conv(frames).mean(dim=(2, 3)))

    with pytest.raises(cs.LayerError, match="like the input") as error:
        cs.gradcam(seeded(FrameNet), random_batch((1, 3, 4, 16, 16)), layer="conv")
    assert "\n" not in str(error.value)


# -- inputs ---------------------------------------------------------------------------------------------------------
def test_model_takes_a_video_input_size_and_checks_clips(medical):
    assert medical.input_size == (16, 32, 32) and medical.channels == 1  # channels from the first Conv3d
    assert medical.check_input(random_batch(VOLUME)) is not None
    with pytest.raises(cs.InputError, match="channels"):
        medical.check_input(random_batch((1, 3, 16, 32, 32)))
    with pytest.raises(cs.InputError, match=r"permute\(0, 4, 1, 2, 3\)"):
        medical.check_input(random_batch((1, 16, 32, 32, 1)))
    with pytest.raises(cs.InputError, match="5-D"):
        medical.check_input(random_batch((1, 1, 2, 16, 32, 32)))
    with pytest.raises(cs.ModelError, match="T, H, W"):
        cs.Model(medical_cnn(), input_size=(1, 2, 3, 4))


def test_normalization_of_a_clip_is_per_channel():
    model = cs.Model(medical_cnn(), input_size=(4, 8, 8), mean=(0.5,), std=(0.25,))
    clip = torch.rand(2, 1, 4, 8, 8)
    torch.testing.assert_close(model.normalize(clip), (clip - 0.5) / 0.25)
    torch.testing.assert_close(model.denormalize(model.normalize(clip)), clip)


# -- analytic models ----------------------------------------------------------------------------------------------
class OneFrame(nn.Module):
    """A class score that reads frame ``frame`` of the clip only."""

    def __init__(self, frame: int) -> None:
        super().__init__()
        self.frame = frame
        self.conv = nn.Conv3d(1, 4, (1, 3, 3), padding=(0, 1, 1))  # no mixing of frames
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = torch.relu(self.conv(x))[:, :, self.frame]  # (B, 4, H, W)
        return self.head(maps.mean(dim=(2, 3)))


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "occlusion"])
def test_a_score_that_reads_one_frame_gets_attribution_on_that_frame_only(method):
    frame, x = 2, random_batch((1, 1, 6, 12, 12))
    options = {"window": (1, 4, 4), "stride": (1, 2, 2)} if method == "occlusion" else {}
    result = run_checked(method, seeded(lambda: OneFrame(frame)), x, target=1, **options)
    values = result.data.abs().sum(dim=(0, 1, 3, 4))  # (T,) attribution per frame
    assert float(values[frame]) > 0
    others = torch.cat([values[:frame], values[frame + 1:]])
    # gradients through a slice are exactly 0; occlusion's drops are differences of forwards batched differently
    bound = 1e-6 * float(values[frame]) if method == "occlusion" else 0.0
    assert float(others.max()) <= bound, f"{method} puts {others.tolist()} on the frames it cannot see"


class SubVolume(nn.Module):
    """A score that reads a layer's activations inside one box only: positions outside it are zeroed by ``gate``."""

    def __init__(self, box: tuple[slice, ...], pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 6, 3, padding=1)
        self.pool = nn.MaxPool3d(2) if pool else nn.Identity()
        self.gate = Gate(box)
        self.head = nn.Linear(6, 2)
        with torch.no_grad():
            self.head.weight.fill_(1.0)  # every channel speaks for both classes: Grad-CAM's weights are positive
            self.head.bias.fill_(1.0)  # a positive score: Ablation-CAM's relative drops keep their sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gate(self.pool(torch.relu(self.conv(x)))).mean(dim=(2, 3, 4)))


class Gate(nn.Module):
    def __init__(self, box: tuple[slice, ...]) -> None:
        super().__init__()
        self.box = box

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(a)
        mask[(slice(None), slice(None), *self.box)] = 1
        return a * mask


@pytest.mark.parametrize("method", ["gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam", "scorecam", "ablationcam"])
def test_a_cam_of_a_score_that_reads_a_sub_volume_puts_its_mass_there(method):
    x = random_batch((1, 1, 8, 16, 16)).abs()
    box = (slice(2, 6), slice(4, 10), slice(8, 14))  # (t, h, w) at full resolution
    result = run_checked(method, seeded(lambda: SubVolume(box, pool=False)), x, layer="gate", target=0)
    inside = torch.zeros(8, 16, 16, dtype=torch.bool)
    inside[box] = True
    cam = result.data[0, 0]
    assert float(cam[inside].sum()) > 0
    assert float(cam[~inside].abs().sum()) == 0, f"{method} puts mass outside the box the score reads"


def test_trilinear_upsampling_keeps_a_coarse_cam_in_its_sub_volume():
    """The layer is at half resolution (4, 8, 8): its box (1:3, 2:5, 4:7) is (2:6, 4:10, 8:14) in the clip."""
    x = random_batch((1, 1, 8, 16, 16)).abs()
    result = run_checked("gradcam", seeded(lambda: SubVolume((slice(1, 3), slice(2, 5), slice(4, 7)), pool=True)), x,
                         layer="gate", target=0)
    assert result.meta["layer_shape"] == (6, 4, 8, 8)
    cam = result.data[0, 0]
    inside = torch.zeros(8, 16, 16, dtype=torch.bool)
    inside[1:7, 3:11, 7:15] = True  # the box, one pixel of trilinear spill around it
    assert float(cam[inside].sum()) / float(cam.sum()) > 0.99
    assert float(cam[2:6, 4:10, 8:14].amin()) > 0  # the box itself is covered


# -- occlusion on a clip ------------------------------------------------------------------------------------------
def test_occlusion_windows_cover_time_with_sensible_defaults(medical):
    x = random_batch(VOLUME)
    result = run_checked("occlusion", medical, x, window=None, stride=None)
    assert result.meta["window"] == (4, 8, 8)  # a quarter of every side
    assert result.meta["stride"] == (2, 4, 4)  # half the window
    assert result.meta["frames"] == (0, 2, 4, 6, 8, 10, 12)
    assert tuple(result.meta["grid"].shape) == (1, 7, 7, 7) and result.meta["windows"] == 343
    whole_pixels = cs.occlusion(medical, x, window=(16, 16), stride=16)  # (h, w) in pixels: the default time window
    assert whole_pixels.meta["window"] == (4, 16, 16) and whole_pixels.meta["windows"] == 7 * 2 * 2
    with pytest.raises(cs.OptionError, match="larger than the 16x32x32 video"):
        cs.occlusion(medical, x, window=(17, 8, 8))


def test_occlusion_cost_estimate_counts_windows_over_time(medical):
    plan = cs.registry.get("occlusion").plan(medical, random_batch(VOLUME), window=(2, 16, 16), stride=(2, 16, 16))
    cost = plan.estimate(check=False)
    assert cost.detail == "32 windows of 2x16x16 per video"  # 8 steps in time x 2 x 2
    assert cost.forwards == 1 + 32


# -- feature maps -------------------------------------------------------------------------------------------------
def test_feature_maps_of_3d_layers_keep_their_frames(medical):
    x = random_batch(VOLUME)
    before = snapshot(medical.module, x)
    maps = cs.feature_maps(medical, x, layer="4")
    assert_unchanged(before, medical.module, x)
    assert tuple(maps.data.shape) == (1, 16, 8, 16, 16) and tuple(maps.meta["mean_activation"].shape) == (1, 16)
    walk = cs.feature_maps(medical, x)
    assert list(walk) == ["0", "4"] and all(r.data.dim() == 5 for r in walk.values())


# -- rendering ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_results(medical) -> dict[str, Any]:
    x = random_batch((2, *VOLUME[1:]))
    return {"map": cs.gradcam(medical, x, layer="4"), "pixels": cs.saliency(medical, x[:1]),
            "signed": cs.occlusion(medical, x[:1], window=0.5, stride=0.5),
            "feature_maps": cs.feature_maps(medical, x[:1], layer="0"), "feature_walk": cs.feature_maps(medical, x[:1])}


@pytest.mark.parametrize("which", ["map", "pixels", "signed", "feature_maps", "feature_walk"])
def test_clips_draw_as_frame_strips_with_one_colour_bar(clip_results, which, tmp_path):
    obj = clip_results[which]
    strip = render.picture(obj)
    assert strip.dtype.name == "uint8" and strip.ndim == 3 and strip.shape[2] == 3
    path = obj.save(tmp_path / "strip.png")
    with Image.open(path) as image:
        assert image.size == (strip.shape[1], strip.shape[0])
    assert render.caption(obj) and render.to_html(obj).startswith("<figure")
    assert render.figure(obj) is not None


def test_a_batch_of_clips_is_one_row_each_on_a_shared_scale(clip_results):
    both, first = render.picture(clip_results["map"]), render.picture(clip_results["map"], index=0)
    assert both.shape[0] > first.shape[0]
    scale = render.video.video_scale(clip_results["map"])
    assert scale.scope == "shared by all videos" and scale.high > scale.low


def test_the_strip_overlays_the_map_on_the_frames(clip_results):
    result = clip_results["map"]
    plain = render.video.frame_strip(result, index=0, alpha=0.0, colorbar=False)
    shown = render.video.frame_strip(result, index=0, colorbar=False)
    assert plain.shape == shown.shape and (plain != shown).any()  # the heatmap changes the frames where it is strong
    assert render.video.frame_strip(result, index=0, max_frames=3, colorbar=False).shape[1] < shown.shape[1]


@pytest.mark.parametrize("suffix, fmt", [(".gif", "GIF"), (".apng", "PNG")])
@pytest.mark.parametrize("which", ["map", "signed", "feature_maps"])
def test_clips_save_as_animations_one_picture_per_frame(clip_results, which, suffix, fmt, tmp_path):
    result = clip_results[which]
    path = result.save(tmp_path / f"clip{suffix}", index=0)
    with Image.open(path) as image:
        assert image.format == fmt and image.n_frames == result.data.shape[2]
        assert getattr(image, "is_animated", False)
    data = render.video.animation(result[0], format="apng")
    with Image.open(io.BytesIO(data)) as image:
        assert image.n_frames == result.data.shape[2]


def test_an_animated_png_of_a_picture_result_is_refused(tmp_path):
    net = seeded(lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                       nn.Linear(4, 2)))
    result = cs.gradcam(net, random_batch((1, 3, 16, 16)), layer="0")
    with pytest.raises(cs.ConvscopeError, match="videos only"):
        result.save(tmp_path / "x.apng")
    with Image.open(result.save(tmp_path / "x.gif")) as image:  # a picture's GIF stays one picture
        assert getattr(image, "n_frames", 1) == 1


def test_drawing_a_clip_over_another_picture_is_refused_in_one_line(clip_results):
    with pytest.raises(cs.ConvscopeError, match="own input"):
        render.picture(clip_results["map"], image=torch.zeros(3, 32, 32))


def test_maps_of_several_3d_layers_are_fused(medical):
    result = run_checked("gradcam", medical, random_batch(VOLUME), layer=["4", "6"])
    assert tuple(result.data.shape) == (1, 1, *VOLUME[2:]) and result.layer == "4+6"
    assert float(result.data.max()) <= 1 + 1e-6  # each layer's map scaled by its peak, then averaged


def test_occlusion_mask_of_a_clip_keeps_its_frames(medical):
    result = run_checked("occlusion", medical, random_batch(VOLUME), window=0.5, stride=0.5)
    mask = cs.occlusion_mask(result, 0.5)
    assert mask.shape == result.data.shape and mask.dtype == torch.bool
    assert bool(mask.any()) == bool((result.data > 0).any())
    with pytest.raises(cs.ConvscopeError, match="video"):
        cs.masked_image(result)


@pytest.mark.parametrize("baseline", ["zeros", "black", "blur", "tensor"])
def test_integrated_gradients_baselines_of_a_clip(medical, baseline):
    x = random_batch(VOLUME)
    given = torch.full(VOLUME[1:], 0.5) if baseline == "tensor" else baseline  # (C, T, H, W): one clip for the batch
    result = run_checked("integrated_gradients", medical, x, baseline=given, steps=16)
    assert_video_result(result, x)
    # completeness: the attributions add up to score(x) - score(baseline), up to the quadrature's error
    gap = float(result.meta["scores"][0] - result.meta["baseline_scores"][0])
    assert abs(float(result.meta["delta"][0])) <= 0.05 * abs(gap) + 1e-4


@pytest.mark.parametrize("fill", ["mean", "blur", 0.5, "tensor"])
def test_occlusion_fills_of_a_clip(medical, fill):
    x = random_batch(VOLUME)
    given = torch.zeros(VOLUME[1:]) if fill == "tensor" else fill
    result = run_checked("occlusion", medical, x, fill=given, window=0.5, stride=0.5)
    assert_video_result(result, x)


def test_summary_of_a_video_model_traces_clips(medical):
    table = str(cs.summary(medical))
    assert "16, 32, 32" in table and "Conv3d" in table
