"""The mouth generator's geometry (boxes, crop, paste), the ridge predictor, and that the generator learns its
condition."""

from __future__ import annotations

import numpy as np
import torch

from synctalk.models.mouth import (
    BOX_DROP,
    BOX_SIDE,
    MouthGenerator,
    MouthModel,
    MouthPredictor,
    crop,
    ellipse_mask,
    mouth_boxes,
    paste,
)


def face_landmarks(corner_y: float = 50.0) -> np.ndarray:
    lm = np.zeros((1, 478, 3), np.float32)
    lm[0, 61, :2], lm[0, 291, :2] = (40, corner_y), (60, corner_y)
    lm[0, 234, :2], lm[0, 454, :2] = (20, 40), (80, 40)
    return lm


def test_box_is_below_the_lip_corners_and_scales_with_the_face():
    box = mouth_boxes(face_landmarks())[0]
    torch.testing.assert_close(box, torch.tensor([50.0, 50 + BOX_DROP * 60, BOX_SIDE * 60]))
    bigger = face_landmarks()
    bigger[..., :2] *= 2
    torch.testing.assert_close(mouth_boxes(bigger)[0], box * 2)


def test_ellipse_is_soft_centred_and_zero_at_the_border():
    mask = ellipse_mask(32)
    assert mask[16, 16] == 1 and mask[0].max() == 0 and mask[:, 0].max() == 0
    assert ((mask > 0) & (mask < 1)).sum() > 32  # feathered, not a hard edge
    torch.testing.assert_close(mask, mask.flip(0))
    torch.testing.assert_close(mask, mask.flip(1))


def test_crop_samples_the_box():
    h, w = 40, 60
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    image = torch.stack([xs, ys, xs * 0])[None].float()          # each pixel holds its centre's coordinates
    box = torch.tensor([[30.0, 20.0, 16.0]])                     # 16 x 16 pixels: exactly pixel-aligned
    out = crop(image, box, 16)[0]
    torch.testing.assert_close(out[0, 0], torch.arange(16) + 22.5)
    torch.testing.assert_close(out[1, :, 0], torch.arange(16) + 12.5)


def test_paste_changes_only_the_ellipse_and_round_trips():
    gen = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=gen), size=(64, 64), mode="bicubic",
                                             align_corners=False)
    boxes = torch.tensor([[30.0, 34.0, 28.0], [20.0, 25.0, 20.0]])
    drawn = torch.zeros(2, 3, 32, 32)
    out = paste(smooth, drawn, boxes)
    changed = (out != smooth).any(1)
    for b, (cx, cy, side) in enumerate(boxes.tolist()):
        ys, xs = torch.nonzero(changed[b], as_tuple=True)
        assert len(ys) > 0
        assert (xs + 0.5 - cx).abs().max() < side / 2 and (ys + 0.5 - cy).abs().max() < side / 2
    # the box's centre is fully replaced; a crop pasted back where it came from changes (almost) nothing
    assert out[0, :, 34, 30].abs().max() < 1e-6
    back = paste(smooth, crop(smooth, boxes, 32), boxes)
    assert (back - smooth).abs().max() < 0.05


def test_generator_keeps_the_outside_of_the_ellipse_and_uses_the_shapes():
    torch.manual_seed(0)
    net = MouthGenerator(n_shapes=5, width=8)
    crops = torch.rand(2, 3, 16, 16)
    shapes = torch.randn(2, 5, requires_grad=True)
    out = net(crops, shapes)
    outside = ellipse_mask(16) == 0
    assert torch.equal(out[..., outside], crops[..., outside])
    out.sum().backward()
    assert shapes.grad.abs().sum() > 0
    # the ellipse's core is blanked: the crop's own mouth there cannot leak into what is drawn
    changed_mouth = crops.clone()
    changed_mouth[..., ellipse_mask(16) == 1] = 0.5
    assert torch.equal(net(changed_mouth, shapes), net(crops, shapes))


def test_any_width_builds():
    for width in (5, 12, 16):  # demo.yaml uses 12: not a multiple of the 8 norm groups
        out = MouthGenerator(n_shapes=2, width=width)(torch.rand(1, 3, 16, 16), torch.zeros(1, 2))
        assert out.shape == (1, 3, 16, 16)


def test_generator_learns_to_draw_what_the_shape_says():
    """A dark 'mouth' whose height is the condition: after a short fit the drawn mouth follows it."""
    torch.manual_seed(0)
    size = 16
    t = torch.arange(size) + 0.5 - size / 2

    def mouths(openness: torch.Tensor) -> torch.Tensor:
        inside = (t[None, :, None].abs() < 1 + 3 * openness[:, None, None]) & (t[None, None, :].abs() < 4)
        return (0.8 - 0.6 * inside.float())[:, None].expand(-1, 3, -1, -1).contiguous()

    net = MouthGenerator(n_shapes=1, width=8)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        openness = torch.rand(16)
        target = mouths(openness)
        loss = (net(target, openness[:, None]) - target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        grid = torch.tensor([0.0, 0.5, 1.0])
        darkness = (0.8 - net(mouths(torch.full((3,), 0.5)), grid[:, None])).clamp_min(0).sum((1, 2, 3))
    assert darkness[0] < darkness[1] < darkness[2]
    assert darkness[2] > 1.5 * darkness[0]


def test_predictor_recovers_a_linear_map_of_the_audio_window():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 6, 2)).astype(np.float32)
    flat = features.reshape(400, -1)
    truth = np.stack([flat[:, 0] + np.roll(flat[:, 3], -1), flat[:, 5] - 0.5 * np.roll(flat[:, 7], 1)], 1)
    truth += rng.normal(scale=0.1, size=truth.shape)
    train, val = list(range(1, 300)), list(range(300, 399))
    predictor, report = MouthPredictor.fit(features, train, truth[train], val, truth[val], radius=1,
                                           alphas=(1e-2, 1.0, 1e6))
    assert report["alpha"] < 1e6 and (report["val_r"] > 0.95).all()
    again = MouthPredictor.from_state(predictor.state_dict())
    np.testing.assert_allclose(again.predict(features, val), predictor.predict(features, val))
    assert predictor.predict(features, [0, 399]).shape == (2, 2)   # windows clamp at the clip's ends


def test_predictions_get_the_spread_of_the_real_mouth():
    """A strong ridge shrinks its predictions; the fitted scale gives them the real blendshapes' spread on the
    held-out frames (gain 1 is right), leaves a blendshape it cannot predict at scale 1, and an old predictor
    without a scale keeps the gain its renders used."""
    from synctalk.models.mouth import LEGACY_SCALE, MAX_SCALE

    rng = np.random.default_rng(1)
    features = rng.normal(size=(600, 8)).astype(np.float32)
    signal = features[:, 0] + 0.5 * features[:, 1]
    truth = np.stack([signal + rng.normal(scale=0.3, size=600), rng.normal(size=600)], 1)
    train, val = list(range(400)), list(range(400, 600))
    predictor, report = MouthPredictor.fit(features, train, truth[train], val, truth[val], radius=0, alphas=(1e3,))
    raw_spread = (predictor.predict(features, val) - predictor.centre)[:, 0].std() / predictor.scale[0]
    assert raw_spread < 0.7 * truth[val, 0].std()                          # the ridge under-shoots ...
    spread = predictor.predict(features, val).std(0)
    np.testing.assert_allclose(spread[0], truth[val, 0].std(), rtol=1e-6)  # ... and the scale undoes it
    assert 1.0 < report["scale"][0] <= MAX_SCALE and report["scale"][1] == 1.0   # noise: r < MIN_R
    legacy = {k: v for k, v in predictor.state_dict().items() if k not in ("scale", "centre")}
    old = MouthPredictor.from_state(legacy)
    unscaled = MouthPredictor(**{**legacy, "scale": None, "centre": None})
    np.testing.assert_allclose(old.predict(features, val), LEGACY_SCALE * unscaled.predict(features, val),
                               rtol=1e-5, atol=1e-6)


def test_model_redraws_only_around_the_mouth():
    torch.manual_seed(0)
    model = MouthModel(predictor=None, generator=MouthGenerator(n_shapes=3, width=8).eval(), size=16)
    images = torch.rand(1, 100, 100, 3)
    a = model.redraw(images, face_landmarks(), np.zeros((1, 3)))
    b = model.redraw(images, face_landmarks(), np.full((1, 3), 2.0))
    differs = (a != b).any(-1)[0]
    ys, xs = torch.nonzero(differs, as_tuple=True)
    cx, cy, side = mouth_boxes(face_landmarks())[0].tolist()
    assert len(ys) > 0 and (xs + 0.5 - cx).abs().max() < side / 2 and (ys + 0.5 - cy).abs().max() < side / 2


def test_constant_features_and_targets_do_not_break_the_fit():
    features = np.zeros((50, 4), np.float32)
    predictor, report = MouthPredictor.fit(features, list(range(40)), np.ones((40, 2)), list(range(40, 50)),
                                           np.ones((10, 2)))
    assert np.isfinite(predictor.predict(features, [1, 2])).all() and np.isfinite(report["val_r"]).all()
