"""The `mouth` stage: the per-subject mouth predictor and generator (synctalk.models.mouth).

1. Ridge regression from the audio features to the 27 jaw/mouth blendshapes (standardised over the training
   frames), its strength picked on the held-out frames; their per-blendshape correlation goes to the log.
2. The generator learns, on the subject's training frames, to fill the lips-and-chin ellipse of a mouth crop from
   the rest of the crop and the frame's true blendshapes. The context is blurred (a render is softer than the
   footage), the crop jittered, and the blendshapes get noise (at render time they come from the predictor).

Checkpoints (`WORKSPACE/checkpoints/mouth/`) hold the generator, its optimizer, EMA, sampler and RNG state and the
predictor, so the stage resumes exactly. Validation: PSNR inside the ellipse on held-out frames, drawn from the
true blendshapes, from the predicted ones and from the mean mouth; a sheet `WORKSPACE/val/mouth_<step>.png` (rows:
footage, true, predicted, mean) and a jawOpen sweep `mouth_sweep_<step>.png`.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from synctalk.train.stage import GeneratorState, StageRun

log = logging.getLogger("synctalk.train")

BATCH = 12
SHAPE_NOISE = 0.3        # standardised units
JITTER = (0.03, 0.04)    # crop centre (of its side), crop side (relative)
MAX_BLUR_PX = 1.2        # Gaussian sigma of the context blur, crop pixels
OUTER = 1.4              # stored footage crops: the mouth box grown by this, room for the jitter


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = 2
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None])[None, None].expand(images.shape[1], 1, -1, -1)
    return F.conv2d(F.pad(images, (radius,) * 4, mode="replicate"), kernel, groups=images.shape[1])


def footage_crops(ds, size: int, device, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Every frame's mouth crop with a margin for the jitter, as uint8 ``[N, 3, P, P]`` (P = OUTER·size, so memory
    does not grow with the frame size), and each frame's mouth box in that crop's pixels ``[N, 3]``."""
    from synctalk.models.mouth import crop, mouth_boxes
    from synctalk.progress import track

    boxes = mouth_boxes(ds.landmarks)
    outer = boxes.clone()
    outer[:, 2] *= OUTER
    side = int(np.ceil(size * OUTER))
    crops = torch.empty(len(ds), 3, side, side, dtype=torch.uint8)
    for frame in track(range(len(ds)), "mouth: footage crops", unit="frame", leave=False, enabled=progress):
        image = torch.as_tensor(np.array(ds.gt(frame)), dtype=torch.float32).permute(2, 0, 1)[None]
        crops[frame] = crop(image, outer[frame:frame + 1], side)[0].round().clamp(0, 255).to(torch.uint8)
    inner = torch.stack([torch.full((len(ds),), side / 2), torch.full((len(ds),), side / 2),
                         torch.full((len(ds),), side / OUTER)], -1)
    return crops.to(device), inner.to(device)


def _batch(crops: torch.Tensor, boxes: torch.Tensor, shapes: torch.Tensor, frames: list[int],
           rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(blurred context crops, target crops, noisy blendshapes) of BATCH random training frames."""
    from synctalk.models.mouth import crop

    pick = torch.as_tensor(rng.choice(frames, BATCH), device=crops.device)
    noise = torch.as_tensor(rng.standard_normal((BATCH, 3)), dtype=torch.float32, device=crops.device)
    box = boxes[pick].clone()
    box[:, :2] += noise[:, :2] * JITTER[0] * box[:, 2:3]
    box[:, 2] *= 1 + noise[:, 2] * JITTER[1]
    gain = 1 + torch.as_tensor(rng.standard_normal((BATCH, 3, 1, 1)), dtype=torch.float32, device=crops.device) * 0.03
    target = (crop(crops[pick].float() / 255, box, size) * gain).clamp(0, 1)
    context = _blur(target, float(rng.uniform(0.1, MAX_BLUR_PX)))
    cond = shapes[pick] + torch.as_tensor(rng.standard_normal((BATCH, shapes.shape[1])), dtype=torch.float32,
                                          device=crops.device) * SHAPE_NOISE
    return context, target, cond


def region_psnr(drawn: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    err = (((drawn - target) ** 2) * mask).sum() / (mask.sum() * drawn.shape[0] * drawn.shape[1])
    return float(-10 * torch.log10(err.clamp_min(1e-12)))


def train_mouth(ctx) -> None:
    """Run (or resume) the mouth stage (``ctx``: a :class:`synctalk.train.stage.StageContext`)."""
    from synctalk.io.images import write_image
    from synctalk.models.head import MOUTH_BLENDSHAPE_NAMES
    from synctalk.models.mouth import MouthGenerator, MouthPredictor, crop, ellipse_mask

    tcfg, ds = ctx.tcfg, ctx.ds
    info = ctx.log.stage("mouth")
    if tcfg.mouth_generator_steps <= 0 or info.get("status") == "done":
        return
    size = tcfg.mouth_generator_size
    train_frames, val_frames = list(ctx.data.train), list(ctx.data.val)
    log.info("mouth stage: fitting the audio -> mouth predictor on %d training frames", len(train_frames))
    shapes = ctx.data.mouth
    shapes_np = shapes.cpu().numpy()
    features = ctx.data.features.cpu().numpy()
    predictor, report = MouthPredictor.fit(features, train_frames, shapes_np[train_frames], val_frames,
                                           shapes_np[val_frames])
    jaw = MOUTH_BLENDSHAPE_NAMES.index("jawOpen")
    info.update(predictor_alpha=report["alpha"], predictor_val_r_mean=round(float(report["val_r"].mean()), 3),
                predictor_val_r_jawopen=round(float(report["val_r"][jaw]), 3),
                predictor_scale_jawopen=round(float(report["scale"][jaw]), 3))
    log.info("mouth predictor: held-out correlation %.2f on average, %.2f for jawOpen; spread matched to the real "
             "mouth's (jawOpen x%.2f)", report["val_r"].mean(), report["val_r"][jaw], report["scale"][jaw])

    device = ctx.device
    crops, boxes = footage_crops(ds, size, device, progress=ctx.progress)

    torch.manual_seed(ctx.cfg.seed)
    config = {"n_shapes": len(MOUTH_BLENDSHAPE_NAMES), "width": tcfg.mouth_generator_width}
    generator = MouthGenerator(**config).to(device)
    optimizer = torch.optim.AdamW(generator.parameters(), lr=tcfg.lr_mlp)
    steps = tcfg.mouth_generator_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.05 ** (s / steps))
    rng = np.random.default_rng(ctx.cfg.seed)
    run = StageRun(ctx, "mouth", generator, optimizer, scheduler, steps=steps, sampler=GeneratorState(rng),
                   extra={"generator_config": config, "size": size, "predictor": predictor.state_dict()})
    run.resume()
    mask = ellipse_mask(size, device)

    def losses(step: int) -> dict[str, torch.Tensor]:
        context, target, cond = _batch(crops, boxes, shapes, train_frames, rng, size)
        l1 = ((generator(context, cond) - target).abs() * mask).sum() / (mask.sum() * target.shape[0] * 3)
        return {"l1_ellipse": l1}

    run.run(losses)
    run.finish()
    picks = val_frames[:: max(1, len(val_frames) // 8)][:8] or train_frames[:8]
    with torch.no_grad():
        footage = crop(crops[picks].float() / 255, boxes[picks], size)
        predicted = torch.as_tensor(predictor.predict(features, picks), device=device)
        rows = {"true": generator(footage, shapes[picks]), "predicted": generator(footage, predicted),
                "mean": generator(footage, torch.zeros_like(predicted))}
        sweep = shapes[picks[:1]].repeat(5, 1)
        sweep[:, jaw] = torch.linspace(-1.5, 3.0, 5, device=device)
        swept = generator(footage[:1].expand(5, -1, -1, -1), sweep)
    for name, drawn in rows.items():
        info[f"val_ellipse_psnr_{name}"] = round(region_psnr(drawn, footage, mask), 3)
    run.save(info["val_ellipse_psnr_predicted"])

    def strip(batch: torch.Tensor) -> np.ndarray:
        return (torch.cat(list(batch), 2).permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)

    (ctx.workspace / "val").mkdir(exist_ok=True)
    write_image(ctx.workspace / "val" / f"mouth_{run.step:07d}.png",
                np.concatenate([strip(footage)] + [strip(v) for v in rows.values()], 0))
    write_image(ctx.workspace / "val" / f"mouth_sweep_{run.step:07d}.png", strip(swept))
    log.info("mouth: ellipse PSNR on held-out frames %.2f dB (true blendshapes), %.2f (predicted), %.2f (mean)",
             info["val_ellipse_psnr_true"], info["val_ellipse_psnr_predicted"], info["val_ellipse_psnr_mean"])
    run.done()
