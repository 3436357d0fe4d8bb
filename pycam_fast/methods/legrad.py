"""LeGrad (Bousselham et al. 2024, "LeGrad: An Explainability Method for Vision Transformers"), as in TorchCAM 0.5.0.

For every selected transformer block ``l`` the block's output tokens ``(N, T, D)`` are projected to class logits
``s^l`` (torchvision ``VisionTransformer``: ``heads(encoder.ln(mean_T(tokens)))``, else a user ``score_projection``);
the explained class's ``s^l`` is differentiated with respect to the block's post-softmax attention probabilities
``P^l`` ``(N, heads, queries, keys)``; ``R^l = mean_{heads, queries} ReLU(dS^l / dP^l)`` without the ``prefix_tokens``
keys, reshaped to the patch grid; the map is ``mean_l R^l``, min-max normalised.

Paper vs code: LeGrad's reference code projects each block's [CLS] token (through the final norm and the head),
as torchvision's ``VisionTransformer`` itself classifies; TorchCAM 0.5.0 (and this default) projects the *mean* of
all tokens. ``score_projection=lambda t: model.heads(model.encoder.ln(t[:, 0]))`` gives the [CLS] projection. Maps
stay at patch resolution (no upsampling), and attention values are not multiplied into the gradients.

The attention is captured from ``nn.MultiheadAttention`` children named ``self_attention`` (torchvision's
``EncoderBlock``; timm-style blocks must expose the same child): a forward pre-hook asks for per-head weights and a
forward hook replays the value aggregation from them, so that the returned output depends on the captured tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from math import isqrt
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .. import ops
from ..layers import LayerSpec
from ..targets import ClassIdx, OutputTarget, select_scores
from .extractor import CAMExtractor, _valid_class_idx
from .spec import CamTerms, LayerInputs, MethodSpec

__all__ = ["LEGRAD", "LeGrad"]

#: ``nn.MultiheadAttention.forward``'s positional slots of ``need_weights`` and ``average_attn_weights``
_NEED_WEIGHTS, _AVERAGE = 4, 6


def _terms(layer: LayerInputs) -> CamTerms:
    """Layer maps averaged with equal weights: ``activations`` holds the ``(N, L, h, w)`` per-layer relevances."""
    maps = layer.activations
    return CamTerms(maps.new_full((1, maps.shape[1]), 1.0 / maps.shape[1]), maps)


#: Not registered: LeGrad hooks attention modules and needs its own forward, which the generic front-ends lack.
LEGRAD = MethodSpec(
    name="LeGrad",
    kind="activation",
    terms=_terms,
    summary="R^l = mean_{heads,queries} ReLU(d s^l_c / d P^l)[prefix:]; L = minmax(mean_l R^l)",
    relu=False,
)


def _project_vit_tokens(model: nn.Module) -> Callable[[Tensor], Tensor]:
    encoder = getattr(model, "encoder", None)
    norm, heads = getattr(encoder, "ln", None), getattr(model, "heads", None)
    if not isinstance(norm, nn.Module) or not isinstance(heads, nn.Module):
        raise ValueError("`score_projection` is required for models other than torchvision VisionTransformer")
    return lambda tokens: heads(norm(tokens.mean(dim=1)))


def _check_options(prefix_tokens: Any, grid_shape: Any, score_projection: Any) -> None:
    if not isinstance(prefix_tokens, int):
        raise TypeError("`prefix_tokens` must be an integer")
    if prefix_tokens < 0:
        raise ValueError("`prefix_tokens` must be non-negative")
    if grid_shape is not None:
        if not isinstance(grid_shape, tuple) or len(grid_shape) != 2 or not all(isinstance(d, int) for d in grid_shape):
            raise TypeError("`grid_shape` must be a tuple of two integers")
        if min(grid_shape) <= 0:
            raise ValueError("`grid_shape` dimensions must be positive")
    if score_projection is not None and not callable(score_projection):
        raise TypeError("`score_projection` must be callable")


def _check_attention(attention: Any, name: str) -> nn.MultiheadAttention:
    if not isinstance(attention, nn.MultiheadAttention):
        raise TypeError(f"target block '{name}' must expose `self_attention: nn.MultiheadAttention`")
    if not attention.batch_first:
        raise ValueError(f"target block '{name}' requires batch-first attention")
    if (
        attention.kdim != attention.embed_dim
        or attention.vdim != attention.embed_dim
        or attention.in_proj_weight is None
    ):
        raise ValueError(f"target block '{name}' requires shared-dimension Q/K/V projections")
    if attention.bias_k is not None or attention.bias_v is not None or attention.add_zero_attn:
        raise ValueError(f"target block '{name}' does not support added attention tokens")
    return attention


class LeGrad(CAMExtractor):
    r"""LeGrad for vision transformers: per-block gradients of the class score w.r.t. the attention probabilities.

    ``R^l = mean_{heads, queries} ReLU(d s^l_c / d P^l)`` over the patch keys (``prefix_tokens`` removed), reshaped to
    the patch grid; the map is ``mean_l R^l`` ``(N, h, w)`` (one map for all blocks), min-max normalised.

    Args:
        model: the vision transformer.
        target_layer: transformer block(s) (modules or dotted names) returning tokens ``(N, T, D)`` with a
            batch-first ``nn.MultiheadAttention`` child ``self_attention``.
        score_projection: maps a block's tokens ``(N, T, D)`` to class logits ``(N, K)``; default (torchvision
            ``VisionTransformer``): ``heads(encoder.ln(tokens.mean(1)))``.
        prefix_tokens: non-patch tokens (e.g. [CLS]) at the start of the keys, removed before reshaping.
        grid_shape: the patch grid ``(h, w)``; default: square.
        enable_hooks: whether hooks record from the start.
        backend: backend of the final averaging/normalisation op.

    Raises:
        TypeError: an argument of the wrong type, or a block without ``self_attention``.
        ValueError: no target block, an unsupported attention module, or a model that needs ``score_projection``.

    """

    spec = LEGRAD

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec,
        *,
        score_projection: Callable[[Tensor], Tensor] | None = None,
        prefix_tokens: int = 1,
        grid_shape: tuple[int, int] | None = None,
        enable_hooks: bool = True,
        backend: str = "auto",
    ) -> None:
        if target_layer is None or (isinstance(target_layer, list) and not target_layer):
            raise ValueError("LeGrad requires at least one explicit target block")
        _check_options(prefix_tokens, grid_shape, score_projection)
        self._score_projection = score_projection if score_projection is not None else _project_vit_tokens(model)
        self.prefix_tokens = prefix_tokens
        self.grid_shape = grid_shape
        super().__init__(model, target_layer, enable_hooks=enable_hooks, backend=backend)
        try:
            for idx, name in enumerate(self.target_names):
                attention = _check_attention(getattr(self.submodule_dict[name], "self_attention", None), name)
                hook = partial(self._ask_for_weights, idx=idx)
                self.hook_handles.append(attention.register_forward_pre_hook(hook, with_kwargs=True))
                hook = partial(self._capture_weights, idx=idx)
                self.hook_handles.append(attention.register_forward_hook(hook, with_kwargs=True))
        except Exception:
            self.remove_hooks()
            raise

    # -- hooks -----------------------------------------------------------------------------------------------------
    def reset_hooks(self) -> None:
        """Clear the recorded layer scores, attention probabilities and graph references."""
        super().reset_hooks()
        self.hook_attn: list[Tensor | None] = [None] * len(self.target_names)
        self._token_counts: list[int | None] = [None] * len(self.target_names)
        self._asked: list[tuple[bool, bool] | None] = [None] * len(self.target_names)

    def _hook_a(self, _module: nn.Module, _inputs: tuple[Any, ...], output: Any, idx: int = 0) -> None:
        """Block output tokens ``(N, T, D)`` -> the block's class logits ``(N, K)`` (kept in ``hook_a``)."""
        if not self._hooks_enabled:
            return
        if not isinstance(output, Tensor) or output.ndim != 3:
            raise ValueError("LeGrad target blocks must return tokens shaped (batch, tokens, embedding)")
        logits = self._score_projection(output)
        if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != output.shape[0]:
            raise ValueError("`score_projection` must return class logits shaped (batch, classes)")
        self.hook_a[idx] = logits
        self._token_counts[idx] = output.shape[1]

    def _ask_for_weights(
        self, module: nn.MultiheadAttention, args: tuple[Any, ...], kwargs: dict[str, Any], idx: int = 0
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """Pre-hook: per-head, non-averaged weights; a query that requires grad (parameters' flags untouched)."""
        if not self._hooks_enabled:
            return None
        if not torch.is_grad_enabled() or torch.is_inference_mode_enabled():
            raise RuntimeError("LeGrad requires a forward pass with gradient tracking enabled")
        if module.training and module.dropout > 0:
            raise ValueError("LeGrad does not support active attention dropout")
        if len(args) < 3 or not all(isinstance(a, Tensor) for a in args[:3]):
            raise ValueError("LeGrad requires tensor query, key, and value inputs")
        query = args[0]
        if args[1] is not query or args[2] is not query:
            raise ValueError("LeGrad only supports self-attention")
        if query.ndim != 3:
            raise ValueError("LeGrad requires attention inputs shaped (batch, tokens, embedding)")
        new_args = list(args)
        bias = module.in_proj_bias
        tracked = (
            query.requires_grad or module.in_proj_weight.requires_grad or (bias is not None and bias.requires_grad)
        )
        if not tracked:
            query = query.detach().requires_grad_()
            new_args[:3] = [query] * 3
        new_kwargs = dict(kwargs)
        asked = []
        for slot, key, forced in ((_NEED_WEIGHTS, "need_weights", True), (_AVERAGE, "average_attn_weights", False)):
            if len(new_args) > slot:
                asked.append(bool(new_args[slot]))
                new_args[slot] = forced
            else:
                asked.append(bool(new_kwargs.get(key, True)))
                new_kwargs[key] = forced
        self._asked[idx] = (asked[0], asked[1])
        return tuple(new_args), new_kwargs

    def _capture_weights(
        self,
        module: nn.MultiheadAttention,
        args: tuple[Any, ...],
        _kwargs: dict[str, Any],
        output: Any,
        idx: int = 0,
    ) -> tuple[Tensor, Tensor | None] | None:
        """Forward hook: keep ``P`` ``(N, heads, Q, K)``; return an output recomputed from it (so ``dS/dP`` exists)."""
        if not self._hooks_enabled:
            return None
        if not isinstance(output, tuple) or len(output) != 2 or not isinstance(output[1], Tensor):
            raise ValueError("LeGrad requires per-head attention probabilities from `nn.MultiheadAttention`")
        probs, value = output[1], args[2]
        if not isinstance(value, Tensor) or probs.ndim != 4:
            raise ValueError("LeGrad requires attention probabilities shaped (batch, heads, queries, keys)")
        batch, keys, dim = value.shape
        heads = module.num_heads
        if probs.shape[0] != batch or probs.shape[1] != heads or probs.shape[-1] != keys:
            raise ValueError("incompatible attention probability shape")
        bias = module.in_proj_bias
        v = F.linear(value, module.in_proj_weight[2 * dim :], None if bias is None else bias[2 * dim :])
        v = v.reshape(batch, keys, heads, dim // heads).transpose(1, 2)
        mixed = torch.matmul(probs, v).transpose(1, 2).reshape(batch, probs.shape[-2], dim)
        self.hook_attn[idx] = probs
        asked = self._asked[idx]
        if asked is None:
            raise RuntimeError("missing original attention return options")
        need, average = asked
        returned = (probs.mean(dim=1) if average else probs) if need else None
        return module.out_proj(mixed), returned

    # -- checks and maps -------------------------------------------------------------------------------------------
    def _precheck(
        self, class_idx: ClassIdx | None, scores: Any = None, targets: OutputTarget | list[OutputTarget] | None = None
    ) -> None:
        if (class_idx is None) == (targets is None):
            raise ValueError("provide exactly one of class_idx or targets")
        if targets is not None:
            raise ValueError("LeGrad does not support arbitrary output targets")
        for logits in self.hook_a:
            if not isinstance(logits, Tensor):
                raise AssertionError("Inputs need to be forwarded in the model for the conv features to be hooked")
            if isinstance(class_idx, list) and logits.shape[0] != len(class_idx):
                raise ValueError("expected batch size and length of `class_idx` to be the same.")
        if not _valid_class_idx(class_idx, self.hook_a[0].shape[0]):  # type: ignore[union-attr]
            raise ValueError(
                "Incorrect `class_idx` argument value: pass a non-negative int or a list of non-negative ints "
                f"(got {class_idx!r})"
            )
        if any(not isinstance(probs, Tensor) for probs in self.hook_attn):
            raise AssertionError("Inputs need to be forwarded through every LeGrad target block")

    def relevances(self, class_idx: ClassIdx, retain_graph: bool = False) -> list[Tensor]:
        """Per block ``mean_{heads, queries} ReLU(d s^l_c / d P^l)`` over the patch keys: ``(N, T - prefix)`` each.

        Raises:
            AssertionError: a block was not forwarded.
            RuntimeError: a block's score is not connected to its attention (or the graph was freed).

        """
        out = []
        last = len(self.target_names) - 1
        for idx, (logits, probs) in enumerate(zip(self.hook_a, self.hook_attn, strict=True)):
            if not isinstance(logits, Tensor) or not isinstance(probs, Tensor):
                raise AssertionError("Inputs need to be forwarded through every LeGrad target block")
            score = select_scores(logits, class_idx, None).sum()
            try:
                (grad,) = torch.autograd.grad(score, probs, retain_graph=retain_graph or idx < last)
            except RuntimeError as exc:
                raise RuntimeError(
                    f"layer-specific score for '{self.target_names[idx]}' is not connected to its attention"
                ) from exc
            out.append(grad.relu().mean(dim=(1, 2))[:, self.prefix_tokens :])
        return out

    def _grid(self, patches: int) -> tuple[int, int]:
        if patches <= 0:
            raise ValueError("`prefix_tokens` must leave at least one patch token")
        if self.grid_shape is not None:
            if self.grid_shape[0] * self.grid_shape[1] != patches:
                raise ValueError("`grid_shape` does not match the number of patch tokens")
            return self.grid_shape
        side = isqrt(patches)
        if side * side != patches:
            raise ValueError("unable to infer a square patch grid; specify `grid_shape`")
        return side, side

    def compute_cams(  # type: ignore[override]
        self,
        class_idx: ClassIdx | None = None,
        scores: Any = None,
        normalized: bool = True,
        retain_graph: bool = False,
        *,
        targets: OutputTarget | list[OutputTarget] | None = None,
        **kwargs: Any,
    ) -> list[Tensor]:
        """One ``(N, h, w)`` map for all target blocks (``scores`` is not used: each block has its own).

        Raises:
            ValueError: ``targets`` given, or token counts / grid that do not match.

        """
        if targets is not None:
            raise ValueError("LeGrad does not support arbitrary output targets")
        kwargs.pop("output_size", None)
        rel = self.relevances(class_idx, retain_graph=retain_graph)  # type: ignore[arg-type]
        for count, r in zip(self._token_counts, rel, strict=True):
            if count is None or count != r.shape[-1] + self.prefix_tokens:
                raise ValueError("attention keys and target-block tokens must have matching lengths")
        grid = self._grid(rel[0].shape[-1])
        shapes = {r.shape[-1] for r in rel}
        if len(shapes) != 1:
            raise ValueError("attention keys and target-block tokens must have matching lengths")
        with torch.no_grad():
            maps = torch.stack(rel, dim=1).reshape(rel[0].shape[0], len(rel), *grid)
            terms = self.spec.terms(LayerInputs(maps, backend=self.backend))
            return [ops.cam_step(terms.weights, terms.maps, relu=False, normalize=normalized, backend=self.backend)]

    def _repr_fields(self) -> dict[str, Any]:
        return {"prefix_tokens": self.prefix_tokens, "grid_shape": self.grid_shape}
