"""pragjax's DPO against `trl.DPOTrainer`: the first training steps' losses agree within 1e-4.

Both sides train the same tiny random llama (`tests/hf_models.py`; float32,
no dropout, eager attention on the torch side) on the same 8 pairs of the
arithmetic world, in order (no shuffling), all eight in every batch (an epoch a step, so that steps 2 and 3
see the update on their own pairs), with plain
SGD or AdamW at a constant learning rate and no gradient clipping. TRL gets
the pairs pre-tokenised (`prompt_ids`, `chosen_ids`, `rejected_ids` built
here from the tokenizer: BOS + prompt, response + EOS), so that a difference
in tokenisation fails the test instead of being hidden by it; pragjax reads
the pairs as strings from JSONL, as a user's run would. TRL's per-step loss
is read in its `compute_loss`, unrounded.
"""

import json
import os

import numpy as np
import pytest

from experiments.configs import dpo as dpo_configs
from pragjax.methods.preference import recipe, toy
from pragjax.toyworld import arithmetic
from tests import hf_models

trl = pytest.importorskip("trl", reason="trl is not installed (pip install -e .[test] pins it)")
torch = pytest.importorskip("torch")
datasets = pytest.importorskip("datasets")

STEPS, BATCH, BETA = 3, 8, 0.1  # 8 pairs: one per simulated device of the test session


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("trl_parity")
  model_dir = hf_models.make_hf_checkpoint("llama", str(root), seed=0, std=0.1)
  tok = arithmetic.tokenizer()
  tok.save(model_dir)
  pairs = [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in toy.training_pairs(3, BATCH)]
  data = str(root / "pairs.jsonl")
  with open(data, "w") as f:
    f.writelines(json.dumps(p) + "\n" for p in pairs)
  return {"root": root, "model": model_dir, "data": data, "pairs": pairs, "tok": tok}


def _pragjax_losses(setup, workdir, *, loss, reduction, reference, optim, lr):
  c = dpo_configs.get_config("toy")
  c.model.update(path=setup["model"], dtype="float32")
  c.data.update(train_path=setup["data"], eval_path="", shuffle=False)
  c.dpo.update(loss=loss, beta=BETA, reduction=reduction, reference=reference)
  c.train.update(steps=STEPS, batch_size=BATCH, seq_len=128, log_every=1, checkpoint_every=STEPS, progress=False,
                 async_checkpoint=False)
  c.optim.update(name=optim, lr=lr, schedule="constant", warmup_steps=0, clip_norm=0.0, weight_decay=0.0,
                 b1=0.9, b2=0.999, eps=1e-8, momentum=0.0)
  recipe.run(c, workdir, log=lambda *_: None)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [r["loss"] for r in rows if "loss" in r]


def _trl_losses(setup, outdir, *, loss_type, optim, lr):
  from torch.utils.data import SequentialSampler
  from transformers import AutoModelForCausalLM, AutoTokenizer

  tok = setup["tok"]
  bos, eos = tok.bos_token_id, tok.eos_token_id
  rows = [{"prompt_ids": [bos] + tok.encode(p["prompt"], add_special_tokens=False),
           "chosen_ids": tok.encode(p["chosen"], add_special_tokens=False) + [eos],
           "rejected_ids": tok.encode(p["rejected"], add_special_tokens=False) + [eos]} for p in setup["pairs"]]
  losses = []

  class Trainer(trl.DPOTrainer):

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
      return dataset  # already tokenised

    def _get_train_sampler(self, train_dataset=None):
      return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
      out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
      if model.training:
        losses.append(float((out[0] if return_outputs else out).detach()))
      return out

  torch.manual_seed(0)
  torch.set_num_threads(2)
  model = AutoModelForCausalLM.from_pretrained(setup["model"], dtype=torch.float32, attn_implementation="eager")
  args = trl.DPOConfig(
      output_dir=str(outdir), per_device_train_batch_size=BATCH, max_steps=STEPS, learning_rate=lr,
      lr_scheduler_type="constant", warmup_steps=0, optim=optim, weight_decay=0.0, adam_beta1=0.9,
      adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=0.0, beta=BETA, loss_type=[loss_type],
      bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, report_to="none", save_strategy="no",
      logging_steps=1, seed=0, dataloader_num_workers=0, max_length=None, disable_dropout=True,
      train_sampling_strategy="sequential", pad_to_multiple_of=None)
  trainer = Trainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                    processing_class=AutoTokenizer.from_pretrained(setup["model"]))
  trainer.train()
  return losses


@pytest.mark.parametrize("loss, trl_loss, reduction, reference, optim, lr", [
    ("dpo", "sigmoid", "sum", "in_step", "sgd", 2.0),
    ("dpo", "sigmoid", "sum", "store", "adamw", 1e-3),
    # TRL's IPO divides each side's log-ratio by its number of response tokens: pragjax's reduction=mean.
    ("ipo", "ipo", "mean", "in_step", "sgd", 2.0),
])
def test_first_steps_match_trl(setup, tmp_path, loss, trl_loss, reduction, reference, optim, lr):
  ours = _pragjax_losses(setup, str(tmp_path / "pragjax"), loss=loss, reduction=reduction, reference=reference,
                         optim=optim, lr=lr)
  theirs = _trl_losses(setup, tmp_path / "trl", loss_type=trl_loss,
                       optim={"sgd": "sgd", "adamw": "adamw_torch"}[optim], lr=lr)
  assert len(ours) == STEPS and len(theirs) == STEPS
  # Steps 2 and 3 must feel the updates (without one every step's loss would be the step-1 value at d = 0), or
  # agreeing on them would say nothing about the gradients.
  assert min(abs(x - ours[0]) for x in ours[1:]) > 20 * 1e-4, ours
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
