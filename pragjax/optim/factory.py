"""Optimizers and schedules from a config section.

Config fields (all in `config.optim`, documented in `experiments/configs`):

  name          adamw | rmsprop | sgd | adafactor
  lr            peak learning rate
  schedule      constant | cosine
  warmup_steps  linear warm-up from 0 to `lr`
  total_steps   length of the cosine decay (warm-up included)
  end_lr_factor final lr = lr * end_lr_factor (cosine)
  weight_decay  decoupled weight decay (adamw; 0 elsewhere)
  b1, b2, eps   Adam moments / epsilon;  decay (rmsprop), momentum (sgd, rmsprop)
  clip_norm     global-norm clipping (0 disables)
  trainable     regex over parameter paths ("layers.3.mlp.up_proj"); only
                matching parameters are updated (empty: all)
  frozen        regex of parameters never updated (applied after trainable)
  ignore_topk   fraction of update entries zeroed by `ignore_topk` after the
                optimizer (largest magnitudes; 0 disables)
  ignore_topk_scope        tensor | global
  ignore_topk_mode         exact | approx
  ignore_topk_sample_size  sample entries per tensor for approx mode
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import optax

from pragjax.optim.ignore_topk import DEFAULT_SAMPLE_SIZE, ignore_topk


def path_parts(path) -> tuple[str, ...]:
  """A pytree key path as strings, without NNX's trailing `value` keys."""
  parts = []
  for k in path:
    k = getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))
    if k not in ("value", "raw_value"):
      parts.append(str(k))
  return tuple(parts)


def path_str(path) -> str:
  """`('layers', 0, 'mlp', 'up_proj')` -> `"layers.0.mlp.up_proj"`."""
  return ".".join(path_parts(path))


def make_schedule(cfg: Mapping[str, Any]) -> optax.Schedule:
  lr = float(cfg["lr"])
  warmup = int(cfg.get("warmup_steps", 0))
  kind = cfg.get("schedule", "constant")
  if kind == "constant":
    if warmup == 0:
      return optax.constant_schedule(lr)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup]
    )
  if kind == "cosine":
    total = int(cfg.get("total_steps", 0))
    if total <= warmup:
      raise ValueError(f"optim.total_steps={total} must exceed optim.warmup_steps={warmup} for a cosine schedule")
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup, total, end_value=lr * float(cfg.get("end_lr_factor", 0.0))
    )
  raise ValueError(f"optim.schedule={kind!r}; expected 'constant' or 'cosine'")


def _base(cfg: Mapping[str, Any], schedule) -> optax.GradientTransformation:
  name = cfg.get("name", "adamw")
  if name == "adamw":
    return optax.adamw(
        schedule, b1=float(cfg.get("b1", 0.9)), b2=float(cfg.get("b2", 0.999)),
        eps=float(cfg.get("eps", 1e-8)), weight_decay=float(cfg.get("weight_decay", 0.0)),
    )
  if name == "rmsprop":
    return optax.rmsprop(
        schedule, decay=float(cfg.get("decay", 0.9)), eps=float(cfg.get("eps", 1e-8)),
        momentum=float(cfg.get("momentum", 0.0)) or None,
    )
  if name == "sgd":
    return optax.sgd(schedule, momentum=float(cfg.get("momentum", 0.0)) or None)
  if name == "adafactor":
    return optax.adafactor(schedule)
  raise ValueError(f"optim.name={name!r}; expected one of adamw, rmsprop, sgd, adafactor")


def param_labels(params, trainable: str = "", frozen: str = ""):
  """'train' / 'freeze' label per parameter leaf from path regexes."""
  t = re.compile(trainable) if trainable else None
  f = re.compile(frozen) if frozen else None

  def label(path, _):
    p = path_str(path)
    if t is not None and not t.search(p):
      return "freeze"
    if f is not None and f.search(p):
      return "freeze"
    return "train"

  return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(cfg: Mapping[str, Any], *, extra=()) -> optax.GradientTransformation:
  """Clipping -> optimizer -> `extra` transforms -> ignore-top-k pruning
  (`optim.ignore_topk` > 0), with parameter freezing by regex. `extra`
  transforms and the pruning run on the final updates of trainable params."""
  cfg = dict(cfg)
  parts = []
  if float(cfg.get("clip_norm", 0.0)) > 0:
    parts.append(optax.clip_by_global_norm(float(cfg["clip_norm"])))
  parts.append(_base(cfg, make_schedule(cfg)))
  parts.extend(extra)
  if float(cfg.get("ignore_topk", 0.0)) > 0:
    parts.append(ignore_topk(
        float(cfg["ignore_topk"]), scope=cfg.get("ignore_topk_scope", "tensor"),
        mode=cfg.get("ignore_topk_mode", "exact"),
        sample_size=int(cfg.get("ignore_topk_sample_size", DEFAULT_SAMPLE_SIZE)),
    ))
  tx = optax.chain(*parts)
  trainable, frozen = cfg.get("trainable", ""), cfg.get("frozen", "")
  if trainable or frozen:
    tx = optax.multi_transform(
        {"train": tx, "freeze": optax.set_to_zero()},
        lambda params: param_labels(params, trainable, frozen),
    )
  return tx
