"""Every option geosam's training and evaluation read, with its default.

One yacs tree, as in maskrcnn-benchmark and detectron2: presets in ``configs/*.yaml`` and
``KEY VALUE`` pairs on the command line override these values, and only keys that exist here
can be set (see :func:`geosam.config.load_config`). A key's default also fixes its type: a
float key accepts ints, a list key's elements must have the type of the default's elements.

The frozen, merged tree is written into each run directory, so a run can always be reproduced
and evaluated with the exact options it was trained with.
"""

from collections.abc import Callable

from yacs.config import CfgNode as CN

_C = CN()

# ---------------------------------------------------------------------------------------------
# MODEL: which SAM, from which weights, and which parts of it train.
# ---------------------------------------------------------------------------------------------
_C.MODEL = CN()
# Architecture: "vit_b", "vit_l", "vit_h" (the official SAM sizes) or "tiny" (a small
# SAM-architecture model with random weights, for tests, the demo and CPU benchmarks).
_C.MODEL.TYPE = "vit_b"
# Path to the official sam_vit_{b,l,h}_*.pth file of MODEL.TYPE. Required for the ViT types
# (geosam never downloads weights). Optional for "tiny": empty = random weights from SEED.
_C.MODEL.CHECKPOINT = ""
# A run's trained-weights file (RUN/model_best.pth or model_final.pth) to start from, on top of
# MODEL.CHECKPOINT: continues an earlier fine-tuning (`geosam improve`) instead of starting again
# from the base. Refused when it was trained from another base checkpoint or model type. Empty =
# start from the base.
_C.MODEL.TUNED_WEIGHTS = ""
# Parts that train; everything else is frozen. Any of "mask_decoder", "prompt_encoder",
# "image_encoder". The default trains only the decoder (~4M parameters): it is what adapts SAM
# to parcel boundaries, and with a frozen encoder the image embeddings can be cached.
_C.MODEL.TRAINABLE = ["mask_decoder"]
# Also train the last N image-encoder blocks and the neck after them (everything after block
# depth-N, as detectron2's FREEZE_AT counts from the bottom). 0 = none. Ignored when
# "image_encoder" is in TRAINABLE.
_C.MODEL.ENCODER_TRAINABLE_BLOCKS = 0
# Single-point prompts are ambiguous (a point may mean a field or the farm it belongs to), so
# SAM predicts 3 masks for them and the loss uses the best one. False: one mask per point.
_C.MODEL.MULTIMASK = True
# "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".
_C.MODEL.DEVICE = "auto"

# ---------------------------------------------------------------------------------------------
# INPUT: SAM's preprocessing, augmentation and the prompts sampled from each mask.
# ---------------------------------------------------------------------------------------------
_C.INPUT = CN()
# The longest side of a chip is resized to this, then padded bottom-right to a square, as SAM
# does. The official checkpoints were trained at 1024; their position embeddings fix it.
_C.INPUT.IMAGE_SIZE = 1024
# Per-channel RGB normalisation on 0..255 pixels; SAM's values. Changing them invalidates a
# pretrained encoder, so they only differ for a model trained from scratch.
_C.INPUT.PIXEL_MEAN = [123.675, 116.28, 103.53]
_C.INPUT.PIXEL_STD = [58.395, 57.12, 57.375]
# Geometric augmentation, applied to chip, masks and prompts together. Aerial imagery has no
# canonical "up", so flips and 90° rotations are label-preserving.
_C.INPUT.HFLIP = True
_C.INPUT.VFLIP = True
_C.INPUT.ROT90 = True
# Photometric augmentation of the chip: torchvision's ColorJitter (brightness, contrast,
# saturation, hue), each factor drawn per chip from [1 - v, 1 + v] (hue: a shift in [-v, v] of
# the colour wheel, v <= 0.5). It changes the image the encoder sees every step, so it needs
# the encoder to run (no cached embeddings). Pretraining a model from scratch on synthetic
# scenes uses it so that the encoder does not learn one rendering's colours.
_C.INPUT.COLOR_JITTER = [0.0, 0.0, 0.0, 0.0]
# Each box edge moves by a random amount up to this fraction of the box side, capped at
# BOX_JITTER_MAX_PX, so the model learns from the loose boxes users draw, not exact ones.
_C.INPUT.BOX_JITTER = 0.1
_C.INPUT.BOX_JITTER_MAX_PX = 20
# Prompt kinds sampled per instance: "box", "point" (one positive point), "points"
# (NUM_POINTS positives plus NEGATIVE_POINTS negatives) and "auto" (one positive point anywhere
# in the chip, as automatic mode's point grid falls; off the parcels its target is "no parcel",
# which teaches the IoU head to score such points low), drawn with PROMPT_WEIGHTS (same
# length as PROMPT_TYPES; normalised to sum to 1). An "auto" prompt takes its instance's turn:
# the weights are the kinds' shares of the prompts.
_C.INPUT.PROMPT_TYPES = ["box", "point", "points"]
_C.INPUT.PROMPT_WEIGHTS = [0.5, 0.25, 0.25]
# Prompts per instance per step, each of a different kind (drawn by PROMPT_WEIGHTS without
# replacement; at most the number of kinds with a weight above 0). SAM's training decodes each
# mask several times per image (a first prompt, then corrective points); more than one here
# gets more supervision out of each image embedding for a larger decoder batch.
_C.INPUT.PROMPTS_PER_INSTANCE = 1
_C.INPUT.NUM_POINTS = 3
_C.INPUT.NEGATIVE_POINTS = 2
# At most this many instances (prompts) per chip per step, sampled at random; bounds the
# decoder's batch, which is (chips × instances).
_C.INPUT.MAX_INSTANCES = 16

# ---------------------------------------------------------------------------------------------
# DATASETS: tile datasets written by `geosam tile`.
# ---------------------------------------------------------------------------------------------
_C.DATASETS = CN()
# Tile dataset directories for training and validation (may be the same directory: the split
# names below select spatially separated tiles from its index).
_C.DATASETS.TRAIN = ""
_C.DATASETS.VAL = ""
_C.DATASETS.TRAIN_SPLIT = "train"
_C.DATASETS.VAL_SPLIT = "val"

# ---------------------------------------------------------------------------------------------
# DATALOADER
# ---------------------------------------------------------------------------------------------
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 2
# Chips per step over all processes; each chip brings up to INPUT.MAX_INSTANCES prompts.
_C.DATALOADER.IMS_PER_BATCH = 4
# Use at most this many training chips (0 = all), or this fraction of them; both apply, the
# smaller wins. For quick experiments and learning curves on a subset.
_C.DATALOADER.MAX_SAMPLES = 0
_C.DATALOADER.FRACTION = 1.0

# ---------------------------------------------------------------------------------------------
# SOLVER: optimiser, schedule, and when to stop.
# ---------------------------------------------------------------------------------------------
_C.SOLVER = CN()
# "adamw", what SAM was trained with (the only choice so far).
_C.SOLVER.OPTIMIZER = "adamw"
_C.SOLVER.BASE_LR = 1e-4
_C.SOLVER.WEIGHT_DECAY = 0.01
# Weight decay for normalisation layers' weights and biases, which decay pulls towards zero
# for no regularisation benefit; 0 as in detectron2.
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0
_C.SOLVER.BETAS = [0.9, 0.999]
_C.SOLVER.MAX_EPOCHS = 20
# Linear warm-up over the first WARMUP_ITERS iterations from BASE_LR * WARMUP_FACTOR, so the
# first large gradients of a new task do not wreck the pretrained decoder.
_C.SOLVER.WARMUP_ITERS = 250
_C.SOLVER.WARMUP_FACTOR = 0.001
# After warm-up: "cosine" (to 0 at MAX_EPOCHS) or "multistep" (× GAMMA at each epoch in STEPS).
_C.SOLVER.LR_SCHEDULER = "cosine"
_C.SOLVER.STEPS = [14, 18]
_C.SOLVER.GAMMA = 0.1
# Clip the global gradient norm to this value; 0 disables. Focal loss on rare foreground
# pixels produces occasional large gradients.
_C.SOLVER.CLIP_GRAD_NORM = 1.0
# Save the resumable checkpoint every this many epochs (the last and the best are kept).
_C.SOLVER.CHECKPOINT_PERIOD = 1
# Stop after this many evaluations without a better validation mIoU; 0 disables.
_C.SOLVER.EARLY_STOPPING_PATIENCE = 0
# Mixed precision on CUDA (bf16 where the GPU supports it, else fp16 with loss scaling).
# Ignored on CPU.
_C.SOLVER.AMP = True

# ---------------------------------------------------------------------------------------------
# LOSS: focal + dice on the mask logits, MSE on the IoU head (see geosam.modeling.losses).
# ---------------------------------------------------------------------------------------------
_C.LOSS = CN()
# 20:1 focal to dice, as in the SAM paper.
_C.LOSS.FOCAL_WEIGHT = 20.0
_C.LOSS.DICE_WEIGHT = 1.0
# MSE between the IoU head's prediction and the IoU the predicted mask actually has.
_C.LOSS.IOU_WEIGHT = 1.0
# Focal loss's foreground weight (negative disables it) and focusing exponent.
_C.LOSS.FOCAL_ALPHA = 0.25
_C.LOSS.FOCAL_GAMMA = 2.0

# ---------------------------------------------------------------------------------------------
# CACHE: image embeddings of a frozen encoder, computed once per chip.
# ---------------------------------------------------------------------------------------------
_C.CACHE = CN()
# Train from cached embeddings when the image encoder is frozen ("image_encoder" not in
# MODEL.TRAINABLE and MODEL.ENCODER_TRAINABLE_BLOCKS 0): on CPU the ViT-B encoder costs
# several decoder steps per chip (docs/design-notes.md).
_C.CACHE.EMBEDDINGS = True
# Where the cache lives; empty = beside the training dataset.
_C.CACHE.DIR = ""

# ---------------------------------------------------------------------------------------------
# TEST: evaluation during training and in `geosam evaluate`.
# ---------------------------------------------------------------------------------------------
_C.TEST = CN()
# Evaluate on the validation split every this many epochs (0: only before and after training;
# the untrained model is always scored first).
_C.TEST.EVAL_PERIOD = 1
# A pixel is inside the mask where its logit exceeds this; SAM's 0.0 (probability 0.5). The
# loss uses it too, so the IoU head learns the quality of the mask that is actually used.
_C.TEST.MASK_THRESHOLD = 0.0
# Score the part of each mask that `geosam segment` and the QGIS plugin deliver: the connected
# regions under a positive click, else the region most inside the box (fragments elsewhere in
# the window dropped). False scores the decoder's raw mask.
_C.TEST.PROMPTED_PART = True
# Average each mask's logits over the chip and its three mirror images (left-right, up-down,
# both) before thresholding, as `geosam segment --flip-tta` and the plugin's option do: four
# encoder and decoder runs per prompt, for steadier edges (geosam.runtime.flips). With cached
# embeddings the cache then holds the mirrored chips' embeddings too.
_C.TEST.FLIP_TTA = False
# Automatic-mode points per validation chip ("auto" prompts, drawn uniformly over the chip from
# a generator seeded by the tile id), scored as their own kind, apart from the overall means, with
# the ROC AUC of the IoU head's prediction for "on a parcel and mask IoU >= 0.5" against the
# rest: whether predicted-IoU thresholds can tell automatic mode's parcels from its junk.
# 0: none.
_C.TEST.AUTO_POINTS = 0

# The run directory: frozen config, checkpoints, trained weights, metrics, TensorBoard events.
_C.OUTPUT_DIR = "out/train"
# Seeds the tiny model's initialisation, data order, augmentation and prompt sampling.
_C.SEED = 0

# Keys whose value (or, for list keys, each element) must be one of a fixed set. Kept beside
# the defaults so a new choice is added where its key is.
CHOICES: dict[str, tuple[str, ...]] = {
    "MODEL.TYPE": ("vit_b", "vit_l", "vit_h", "tiny"),
    "MODEL.TRAINABLE": ("mask_decoder", "prompt_encoder", "image_encoder"),
    "INPUT.PROMPT_TYPES": ("box", "point", "points", "auto"),
    "SOLVER.OPTIMIZER": ("adamw",),
    "SOLVER.LR_SCHEDULER": ("cosine", "multistep"),
}


# Numeric keys' valid values: (test, what it asks), applied to each element of a list key. Out of
# range, a zero batch or period would fail deep inside torch or ignite with a traceback.
_POSITIVE = (lambda v: v > 0, "> 0")
_NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
_AT_LEAST_ONE = (lambda v: v >= 1, ">= 1")
_UNIT_INTERVAL = (lambda v: 0 < v <= 1, "in (0, 1]")
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "MODEL.ENCODER_TRAINABLE_BLOCKS": _NON_NEGATIVE,
    "INPUT.IMAGE_SIZE": _POSITIVE,
    "INPUT.PIXEL_STD": _POSITIVE,
    "INPUT.COLOR_JITTER": _NON_NEGATIVE,
    "INPUT.BOX_JITTER": _NON_NEGATIVE,
    "INPUT.BOX_JITTER_MAX_PX": _NON_NEGATIVE,
    "INPUT.PROMPT_WEIGHTS": _NON_NEGATIVE,
    "INPUT.NUM_POINTS": _AT_LEAST_ONE,
    "INPUT.NEGATIVE_POINTS": _NON_NEGATIVE,
    "INPUT.MAX_INSTANCES": _AT_LEAST_ONE,
    "INPUT.PROMPTS_PER_INSTANCE": _AT_LEAST_ONE,
    "DATALOADER.NUM_WORKERS": _NON_NEGATIVE,
    "DATALOADER.IMS_PER_BATCH": _AT_LEAST_ONE,
    "DATALOADER.MAX_SAMPLES": _NON_NEGATIVE,
    "DATALOADER.FRACTION": _UNIT_INTERVAL,
    "SOLVER.BASE_LR": _NON_NEGATIVE,
    "SOLVER.WEIGHT_DECAY": _NON_NEGATIVE,
    "SOLVER.WEIGHT_DECAY_NORM": _NON_NEGATIVE,
    "SOLVER.MAX_EPOCHS": _AT_LEAST_ONE,
    "SOLVER.WARMUP_ITERS": _NON_NEGATIVE,
    "SOLVER.WARMUP_FACTOR": _UNIT_INTERVAL,
    "SOLVER.GAMMA": _POSITIVE,
    "SOLVER.CLIP_GRAD_NORM": _NON_NEGATIVE,
    "SOLVER.CHECKPOINT_PERIOD": _AT_LEAST_ONE,
    "SOLVER.EARLY_STOPPING_PATIENCE": _NON_NEGATIVE,
    "LOSS.FOCAL_WEIGHT": _NON_NEGATIVE,
    "LOSS.DICE_WEIGHT": _NON_NEGATIVE,
    "LOSS.IOU_WEIGHT": _NON_NEGATIVE,
    "LOSS.FOCAL_GAMMA": _NON_NEGATIVE,
    "TEST.EVAL_PERIOD": _NON_NEGATIVE,
    "TEST.AUTO_POINTS": _NON_NEGATIVE,
}


def get_cfg_defaults() -> CN:
    """A mutable copy of the defaults, so callers never change the module-level tree."""
    return _C.clone()
