"""SoCo's three-stage training of the spectrum scores (a reconstruction; see methods.md section 2.3).

Only the scores s of the ScoredSpectrumLinear modules train; U, sigma and B are frozen buffers. The
importance of component i of matrix j is F_ji * s_ji^2: the second-order (Fisher) estimate of the
loss increase when it is removed, F the mean squared gradient of the next-token loss w.r.t. s.

Stage 1, coarse compression: estimate F at the dense model (s = 1) over `fisher_batches` windows,
  then cut straight to the budget, globally, by importance per parameter (spectrum.select_budget).
  With the whitened basis, this already beats SVD-LLM's uniform ranks: sensitive matrices keep more.
Stage 2, fine-grained sparsification: train every score, pruned ones included (they restart at 0
  and get gradients, so a wrongly pruned component can come back), with the loss
      deviation_weight * KL(dense || compressed) + lm_weight * cross-entropy
    + sparsity_weight * sum_j (m_j+n_j) sum_{i pruned} s_ji / sum_j m_j n_j   (regrowth must pay)
    + budget_weight * max(0, soft_params / budget - 1)^2   (soft_params: min(s,1) * cost, summed)
  and every `reselect_every` steps project back onto the budget by importance F * s^2 with the
  trained s (iterative hard thresholding): scores move both ways, the mask oscillates, then settles.
Stage 3, importance-amplified compensation: final projection onto exactly the budget, mask frozen,
  the survivors keep training on the KL (+ LM) loss; they grow above 1 where that makes up for what was
  pruned. Scores are always projected into [0, max_score].

Why KL: the dense model's full next-token distribution (cached once in float16 when it fits) is a
richer target than one-hot tokens and is what the compressed model is judged against. Why Fisher and
not the L1-only path of the paper's summary: with Adam, an L1 pull moves every score at the same speed
and overshoots the budget; F * s^2 gives a loss-calibrated ranking comparable across matrices.
"""

from __future__ import annotations

import math

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from compression.specs.soco import SoCoOptions
from compression.trainable import trainable_only
from compression.spectrum import ScoredSpectrumLinear, apply_selection, capped_params, dense_mode, select_budget

Progress = Callable[[float, str], None]


@dataclass
class TrainingLog:
    stages: list[dict[str, float | int | str]] = field(default_factory=list)
    ranks: list[int] = field(default_factory=list)
    final_params: int = 0


class _Teacher:
    """The dense model's next-token log-probs per calibration window, computed on first use and cached
    (float16) when the whole calibration set would fit in cache_mb; otherwise recomputed each time."""

    def __init__(self, model: torch.nn.Module, modules: Sequence[ScoredSpectrumLinear], calibration: torch.Tensor,
                 device: torch.device, cache_mb: int) -> None:
        self.model, self.modules, self.calibration, self.device = model, modules, calibration, device
        vocab = int(model.get_output_embeddings().weight.shape[0])
        self.cacheable = calibration.numel() * vocab * 2 / 2**20 <= cache_mb
        self.cache: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def _compute(self, batch: torch.Tensor) -> torch.Tensor:
        with dense_mode(self.modules):
            logits = self.model(input_ids=batch.to(self.device), use_cache=False).logits
        return F.log_softmax(logits.float(), dim=-1).to(torch.float16)

    def warm(self, indices: Sequence[int]) -> None:
        """Compute (while the modules can still express the dense weights) the windows used later."""
        for i in indices:
            if i not in self.cache:
                self.cache[i] = self._compute(self.calibration[i : i + 1])[0]

    def log_probs(self, indices: torch.Tensor) -> torch.Tensor:
        if self.cacheable:
            self.warm(indices.tolist())
            return torch.stack([self.cache[i] for i in indices.tolist()]).float()
        return self._compute(self.calibration[indices]).float()


def _task_loss(model: torch.nn.Module, batch: torch.Tensor, teacher_logp: torch.Tensor,
               options: SoCoOptions) -> tuple[torch.Tensor, float, float]:
    logits = model(input_ids=batch, use_cache=False).logits.float()
    logp = F.log_softmax(logits, dim=-1)
    kl = (teacher_logp.exp() * (teacher_logp - logp)).sum(-1).mean()
    ce = F.nll_loss(logp[:, :-1].reshape(-1, logp.shape[-1]), batch[:, 1:].reshape(-1))
    loss = options.deviation_weight * kl + options.lm_weight * ce
    return loss, float(kl.detach()), float(ce.detach())


def _fisher(model: torch.nn.Module, modules: Sequence[ScoredSpectrumLinear], calibration: torch.Tensor,
            batches: int, device: torch.device, check_stop: Callable[[], None], progress: Progress,
            teacher: _Teacher) -> list[torch.Tensor]:
    """Mean over windows of (d next-token-loss / d s)^2 per component (all s = 1: the dense model, so
    the same forward also gives the teacher's log-probs of these windows)."""
    acc = [torch.zeros_like(m.score) for m in modules]
    count = min(batches, calibration.shape[0])
    for b in range(count):
        check_stop()
        batch = calibration[b : b + 1].to(device)
        logits = model(input_ids=batch, use_cache=False).logits.float()
        loss = F.cross_entropy(logits[0, :-1], batch[0, 1:])
        if teacher.cacheable:
            teacher.cache[b] = F.log_softmax(logits.detach()[0], dim=-1).to(torch.float16)
        grads = torch.autograd.grad(loss, [m.score for m in modules])
        for a, g in zip(acc, grads):
            a.add_(g.detach() ** 2)
        progress((b + 1) / count, f"stage 1/3 coarse compression: Fisher window {b + 1}/{count}")
    return [a / count for a in acc]


def _restrict_to_candidates(modules: Sequence[ScoredSpectrumLinear], keep: Sequence[torch.Tensor],
                            fisher: list[torch.Tensor], margin: float) -> list[torch.Tensor]:
    """Drop every component that is neither kept nor among the next margin * rank by Fisher importance."""
    restricted = []
    for m, k, f in zip(modules, keep, fisher):
        k = k.to(f.device)
        extra = min(int(math.ceil(margin * int(k.sum()))), int((~k).sum()))
        # Dropped components rank by their Fisher information (their score is 0 now).
        candidates = torch.where(k, torch.full_like(f, -1.0), f).topk(extra).indices if extra else k.new_zeros(0, dtype=torch.long)
        index = torch.cat([torch.nonzero(k).flatten(), candidates]).sort().values
        m.restrict(index)
        restricted.append(f[index])
    return restricted


def train_scores(
    model: torch.nn.Module,
    modules: Sequence[ScoredSpectrumLinear],
    calibration: torch.Tensor,
    budget: int,
    options: SoCoOptions,
    device: torch.device,
    *,
    seed: int = 0,
    progress: Progress = lambda fraction, message: None,
    check_stop: Callable[[], None] = lambda: None,
) -> TrainingLog:
    """Run the three stages in place; on return every module's mask holds the selected budget."""
    log = TrainingLog()
    costs = [float(m.cost) for m in modules]
    total_dense = float(sum(m.out_features * m.in_features for m in modules))
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []

    def next_batch() -> torch.Tensor:
        nonlocal order
        if len(order) < options.batch_size:
            order += torch.randperm(calibration.shape[0], generator=generator).tolist()
        picked, order = order[: options.batch_size], order[options.batch_size :]
        return torch.tensor(picked)

    fisher_count = min(options.fisher_batches, calibration.shape[0])
    total_work = fisher_count + options.refine_steps + options.compensate_steps + 1
    done = 0

    def report(message: str) -> None:
        nonlocal done
        done += 1
        progress(min(done / total_work, 1.0), message)

    def importance(fisher: list[torch.Tensor]) -> list[torch.Tensor]:
        return [f * m.score.detach() ** 2 for f, m in zip(fisher, modules)]

    # eval(): no dropout; gradients still flow to the scores (restrict() re-allocates them inside).
    with trainable_only(model, [m.score for m in modules], train=False):
        teacher = _Teacher(model, modules, calibration, device, options.teacher_cache_mb)
        fisher = _fisher(model, modules, calibration, options.fisher_batches, device, check_stop,
                         lambda f, msg: report(msg), teacher)
        steps = options.refine_steps + options.compensate_steps
        batches = [next_batch() for _ in range(steps)]  # drawn now so the teacher can be warmed before restriction
        if teacher.cacheable:
            teacher.warm(sorted({i for b in batches for i in b.tolist()}))
        report("cached the dense model's next-token distributions")
        keep = select_budget(modules, budget, importance(fisher))
        apply_selection(modules, keep, freeze=False)
        if options.candidate_margin is not None and teacher.cacheable:
            fisher = _restrict_to_candidates(modules, keep, fisher, options.candidate_margin)
        log.stages.append({"stage": "stage 1/3 coarse compression", "windows": fisher_count,
                           "params_over_budget": capped_params(modules) / budget,
                           "candidates": sum(m.full_rank for m in modules)})

        def run_stage(name: str, steps: int, refine: bool) -> None:
            params = [m.score for m in modules]  # re-read: restrict() replaced the parameters
            optimizer = torch.optim.Adam(params, lr=options.learning_rate)
            kl = ce = 0.0
            for step in range(steps):
                check_stop()
                indices = batches.pop(0)
                batch = calibration[indices].to(device)
                loss, kl, ce = _task_loss(model, batch, teacher.log_probs(indices).to(device), options)
                if refine:
                    pruned = [(s * (s.detach() == 0)) for s in params]  # only scores currently at 0
                    l1 = sum(c * p.sum() for c, p in zip(costs, pruned))
                    soft = sum(c * s.clamp(max=1).sum() for c, s in zip(costs, params))
                    loss = loss + options.sparsity_weight * l1 / total_dense
                    loss = loss + options.budget_weight * F.relu(soft / budget - 1) ** 2
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    for m in modules:
                        m.score.clamp_(0.0, options.max_score).mul_(m.mask)
                if refine and ((step + 1) % options.reselect_every == 0 or step + 1 == steps):
                    apply_selection(modules, select_budget(modules, budget, importance(fisher)), freeze=False)
                report(f"{name}: step {step + 1}/{steps}, kl {kl:.4f}, params/budget "
                       f"{capped_params(modules) / budget:.3f}")
            log.stages.append({"stage": name, "steps": steps, "kl": kl, "lm_loss": ce,
                               "params_over_budget": capped_params(modules) / budget})

        run_stage("stage 2/3 fine-grained sparsification", options.refine_steps, True)
        apply_selection(modules, select_budget(modules, budget, importance(fisher)), freeze=True)
        run_stage("stage 3/3 importance-amplified compensation", options.compensate_steps, False)
        # Survivors that training drove to exactly 0 are dropped at export.
        log.ranks = [max(1, int(torch.count_nonzero(m.score.detach() * m.mask))) for m in modules]
        log.final_params = sum(r * m.cost for r, m in zip(log.ranks, modules))
    return log
