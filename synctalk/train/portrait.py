"""The `portrait` stage: train the per-subject seam/chin restorer of the Portrait-Sync Generator.

Pairs come from training frames: the trained head + torso render of frame k, pasted back into the original
full-resolution frame k (`synctalk.models.portrait.paste_back`), against the original frame. The restorer learns
to make the repair region (feather band + chin/neck) look like the footage; everywhere else it cannot change a
pixel. Renders are cached in `WORKSPACE/portrait/renders/` (resumable); the stage's checkpoints hold the restorer,
its optimizer, EMA and RNG like the other stages. Validation: PSNR inside the repair region of held-out frames,
plain paste-back vs restored, written to train_log.json and `WORKSPACE/val/portrait_<step>.png`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from synctalk.errors import DatasetError
from synctalk.train.stage import GeneratorState, StageRun

log = logging.getLogger("synctalk.train")

RESTORER_CONFIG = {"width": 12}


@dataclass
class PortraitPair:
    pasted: np.ndarray     # uint8 [S, S, 3] crop of the paste-back
    render: np.ndarray     # uint8 [S, S, 3] the render upsampled to the crop
    target: np.ndarray     # uint8 [S, S, 3] the original crop
    mask: np.ndarray       # float32 [S, S]
    region: np.ndarray     # float32 [S, S] repair region


def crop_inside(crop, shape) -> bool:
    return crop.x0 >= 0 and crop.y0 >= 0 and crop.x0 + crop.side <= shape[1] and crop.y0 + crop.side <= shape[0]


def make_pair(ctx, frame: int, source, crop) -> PortraitPair:
    """Render (cached), paste back and cut out the crop of one subject frame."""
    import cv2

    from synctalk.io.images import read_image, write_image
    from synctalk.models.portrait import face_mask, paste_back, repair_region

    cache = ctx.workspace / "portrait" / "renders" / f"{frame:06d}.png"
    if cache.is_file():
        render = read_image(cache)
    else:
        out = ctx.render_frame(frame, ctx.ds.width, with_torso=ctx.torso_trained)
        render = (out.rgb.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        write_image(cache, render)
    original = source[frame]
    landmarks = ctx.ds.landmarks[frame]
    mask = face_mask(landmarks, ctx.ds.width, crop.side)
    pasted = paste_back(render, original, crop, mask)
    inside = (slice(crop.y0, crop.y0 + crop.side), slice(crop.x0, crop.x0 + crop.side))
    return PortraitPair(pasted[inside], cv2.resize(render, (crop.side, crop.side), interpolation=cv2.INTER_CUBIC),
                        original[inside], mask, repair_region(mask, landmarks, ctx.ds.width))


def _batch(pairs: list[PortraitPair], rng: np.random.Generator, patch: int, n: int, device):
    """``n`` random ``patch`` x ``patch`` windows centred on repair-region pixels → tensors [n, C, P, P]."""
    tensors = {name: [] for name in ("pasted", "render", "target", "mask", "region")}
    for _ in range(n):
        pair = pairs[rng.integers(len(pairs))]
        side = pair.mask.shape[0]
        p = min(patch, side - side % 4)
        ys, xs = np.nonzero(pair.region > 0.5)
        k = rng.integers(len(ys)) if len(ys) else None
        cy, cx = (ys[k], xs[k]) if k is not None else (side // 2, side // 2)
        y0, x0 = int(np.clip(cy - p // 2, 0, side - p)), int(np.clip(cx - p // 2, 0, side - p))
        window = (slice(y0, y0 + p), slice(x0, x0 + p))
        for name in tensors:
            value = getattr(pair, name)[window]
            t = torch.as_tensor(np.ascontiguousarray(value), dtype=torch.float32)
            tensors[name].append(t.permute(2, 0, 1) / 255 if t.dim() == 3 else t[None])
    return {name: torch.stack(v).to(device) for name, v in tensors.items()}


def region_psnr(image: np.ndarray, target: np.ndarray, region: np.ndarray) -> float:
    """PSNR over pixels weighted by ``region`` (uint8 images)."""
    weight = region[..., None].astype(np.float64)
    err = ((image.astype(np.float64) - target.astype(np.float64)) / 255) ** 2
    mse = float((err * weight).sum() / max(weight.sum() * 3, 1e-9))
    return float("inf") if mse == 0 else -10 * np.log10(mse)


def train_portrait(ctx, budget_s: float = 0.0) -> None:
    """Run (or resume) the portrait stage (``ctx``: a :class:`synctalk.train.stage.StageContext`)."""
    from synctalk.data.source import SourceFrames
    from synctalk.models.portrait import Crop, Restorer
    from synctalk.progress import track

    tcfg = ctx.tcfg
    info = ctx.log.stage("portrait")
    if tcfg.portrait_steps <= 0 or info.get("status") == "done":
        return
    source = SourceFrames(ctx.ds, ctx.workspace / "portrait" / "source")
    log.info("portrait stage: the original video's frames (%s)", source.video)
    try:
        source.ensure(progress=ctx.progress)
        crop = Crop.from_meta(ctx.ds.meta, ctx.ds.root)
    except DatasetError as exc:
        log.warning("portrait stage skipped: %s", exc)
        info.update(status="skipped", reason=str(exc))
        ctx.log.write()
        return
    if not crop_inside(crop, source[0].shape):
        info.update(status="skipped", reason="the preprocessing crop leaves the frame; plain paste-back is used")
        ctx.log.write()
        return
    device = ctx.device
    train_frames = ctx.data.train
    picks = np.linspace(0, len(train_frames) - 1, min(tcfg.portrait_frames, len(train_frames))).round().astype(int)
    val_frames = list(ctx.data.val[:: max(1, len(ctx.data.val) // 4)][:4])
    log.info("portrait stage: rendering %d training and %d validation frames at %d px and pasting them back into "
             "the original video's frames", len(picks), len(val_frames), ctx.ds.width)
    frames = [int(train_frames[k]) for k in picks] + [int(f) for f in val_frames]
    made = [make_pair(ctx, frame, source, crop)
            for frame in track(frames, "portrait: render and paste back", unit="frame", leave=False,
                               enabled=ctx.progress)]
    pairs, val_pairs = made[:len(picks)], made[len(picks):]

    torch.manual_seed(ctx.cfg.seed)
    restorer = Restorer(**RESTORER_CONFIG).to(device)
    optimizer = torch.optim.AdamW(restorer.parameters(), lr=tcfg.lr_mlp)
    rng = np.random.default_rng(ctx.cfg.seed)
    run = StageRun(ctx, "portrait", restorer, optimizer, steps=tcfg.portrait_steps, budget_s=budget_s,
                   sampler=GeneratorState(rng), extra={"restorer_config": RESTORER_CONFIG})
    run.resume()

    def losses(step: int) -> dict[str, torch.Tensor]:
        batch = _batch(pairs, rng, tcfg.portrait_patch, 4, device)
        out = restorer(batch["pasted"], batch["render"], batch["mask"], batch["region"])
        region = batch["region"]
        return {"l1_region": ((out - batch["target"]).abs() * region).sum() / region.sum().clamp(min=1) / 3}

    run.run(losses)
    run.finish()
    plain, restored, rows = [], [], []
    for pair in val_pairs:
        fixed = restorer.restore(pair.pasted, pair.render, pair.mask, pair.region)
        plain.append(region_psnr(pair.pasted, pair.target, pair.region))
        restored.append(region_psnr(fixed, pair.target, pair.region))
        error = np.abs(fixed.astype(np.int16) - pair.pasted.astype(np.int16)).clip(0, 255).astype(np.uint8) * 4
        rows.append(np.concatenate([pair.target, pair.pasted, fixed, error], 1))
    metric = float(np.mean(restored))
    info.update(val_region_psnr_paste=round(float(np.mean(plain)), 3), val_region_psnr_restored=round(metric, 3))
    run.save(metric)
    from synctalk.io.images import write_image

    (ctx.workspace / "val").mkdir(exist_ok=True)
    write_image(ctx.workspace / "val" / f"portrait_{run.step:07d}.png", np.concatenate(rows, 0))
    log.info("portrait: repair-region PSNR on validation frames %.2f dB (paste-back) -> %.2f dB (restorer)",
             info["val_region_psnr_paste"], metric)
    run.done()
