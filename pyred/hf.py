"""Hugging Face transformers models as backbones: ``pyred.Backbone("hf:NAME_OR_PATH", layer=..., pool=...)``.

Needs the ``[text]`` extra (``transformers``). A local model folder (``save_pretrained``) works offline;
a hub name downloads as transformers does. The tokenizer comes with the model: a batch of texts is
tokenised inside the forward pass (``max_length``, ``padding``, ``truncation`` as options), so datasets
of texts (:class:`pyred.texts.LabeledTexts`) go through ``extract_features`` as images do.

``layer``: ``"hidden_states[k]"`` -- the k-th hidden state as transformers counts them (0 is the
embedding output, negative k from the end; the default is the last) -- or a submodule's name.
``pool``: "mean" over the attention mask (the default for encoders), "last" -- the last token the mask
keeps (the default for decoder-only models) --, "cls", "avg" or "flatten". A vision model (no tokenizer,
an image processor) takes images: ``transform()`` is its image processor, the default pool "cls" for
ViT-like models and "avg" for others. AMP is honoured by the
callers' autocast; fp16/bf16 weights and multi-GPU ``device_map`` are not supported.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from typing import Any

import torch

from .module_backbone import ModuleBackbone, pool_tokens

PREFIX = "hf:"
_HIDDEN = re.compile(r"^hidden_states\[(-?\d+)\]$")
CLS_VISION = ("vit", "deit", "beit", "dinov2", "data2vec-vision", "vit_mae", "vit_msn")  # a class token first
DECODER_TYPES = ("gpt2", "gpt_neo", "gpt_neox", "gptj", "llama", "mistral", "mixtral", "opt", "bloom", "falcon",
                 "phi", "phi3", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "starcoder2", "codegen")


def require_transformers() -> Any:
    try:
        import transformers
    except ModuleNotFoundError:
        raise ModuleNotFoundError("hf: backbones need transformers: pip install 'pyred[text]'") from None
    return transformers


class HFBackbone(ModuleBackbone):
    """A frozen transformers model (see the module docstring). ``dim``: the layer's width;
    ``num_hidden_states``: L + 1 (the embeddings and every block); ``is_decoder``; ``tokenizer``."""

    def __init__(self, name: str, *, layer: str = "hidden_states[-1]", pool: str | None = None,
                 max_length: int = 128, padding: str = "longest", truncation: bool = True,
                 pretrained: bool = True) -> None:
        transformers = require_transformers()
        path = name[len(PREFIX):] if name.startswith(PREFIX) else name
        if not path:
            raise ValueError("name: 'hf:' needs a model name or folder after it, e.g. 'hf:./tiny-bert'")
        path = os.path.expanduser(path)
        local = os.path.isdir(path)
        if not local and path.startswith((".", "/")):
            raise ValueError(f"name: no model folder {path}")
        if layer == "penultimate":  # a study's default layer: the last hidden state
            layer = "hidden_states[-1]"
        kw: dict[str, Any] = {"local_files_only": True} if local else {}
        transformers.utils.logging.disable_progress_bar()  # pyred shows its own bars
        try:
            config = transformers.AutoConfig.from_pretrained(path, **kw)
            model = (transformers.AutoModel.from_pretrained(path, **kw) if pretrained
                     else transformers.AutoModel.from_config(config))
        except OSError as exc:
            where = f"the folder {path}" if local else f"the hub name {path!r} (network needed)"
            raise ValueError(f"name: no transformers model could be loaded from {where}: {str(exc).splitlines()[0]}"
                             ) from None
        self.is_decoder = bool(getattr(config, "is_decoder", False)) or config.model_type in DECODER_TYPES
        super().__init__(model, layer="", pool=pool or ("last" if self.is_decoder else "mean"), name=PREFIX + path)
        self.layer = layer
        self.num_hidden_states = int(getattr(config, "num_hidden_layers", 0)) + 1
        self.weights_source = f"transformers {'folder' if local else 'hub'} {path}" + ("" if pretrained else
                                                                                        " (random init)")
        self.tokenizer: Any = None
        self.image_processor: Any = None
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(path, **kw)
        except (OSError, ValueError, TypeError) as exc:
            try:  # a vision model: images go through its image processor
                self.image_processor = transformers.AutoImageProcessor.from_pretrained(path, **kw)
            except (OSError, ValueError, TypeError):
                raise ValueError(f"name: {path} has neither a tokenizer nor an image processor transformers can "
                                 f"load ({str(exc).splitlines()[0]})") from None
            if pool is None:
                self.pool = "cls" if config.model_type in CLS_VISION else "avg"
        if self.tokenizer is not None and self.tokenizer.pad_token is None:  # decoder-only: pad with end-of-text
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.max_length, self.padding, self.truncation = int(max_length), padding, bool(truncation)
        if self.pool == "flatten" and self.tokenizer is not None and padding != "max_length":
            raise ValueError("pool: 'flatten' on texts needs one length for every batch: padding='max_length'")
        self._probe(config)
        self.hidden_index(layer)  # checks the name
        if self.hidden_index(layer) is not None and self.pool != "flatten":
            self.dim = self.width
        else:
            size = getattr(config, "image_size", 224)
            self.dim = self.measure(["a"] if self.tokenizer is not None else torch.zeros(1, 3, size, size))

    def _probe(self, config: Any) -> None:
        """One tiny forward pass tells what the config may not: how many hidden states there are, their width,
        and whether the model's own output is its last hidden state (a final norm can sit between them)."""
        size = getattr(config, "image_size", 224)
        example: Any = ["a"] if self.tokenizer is not None else torch.zeros(1, 3, size, size)
        batch = self.tokenize(example) if self.tokenizer is not None else {"pixel_values": example}
        with torch.no_grad():
            out = self.model(**batch, output_hidden_states=True)
        hidden = out.hidden_states
        self.num_hidden_states = len(hidden)
        self.width = int(hidden[-1].shape[1] if hidden[-1].dim() == 4 else hidden[-1].shape[-1])
        own = getattr(out, "last_hidden_state", None)
        self._last_is_output = own is not None and own.shape == hidden[-1].shape and torch.equal(own, hidden[-1])

    def hidden_index(self, layer: str) -> int | None:
        """k of "hidden_states[k]" (as given), None for a module name; ValueError when out of range."""
        m = _HIDDEN.match(layer)
        if m is None:
            self.resolve(layer)
            return None
        k = int(m.group(1))
        if not -self.num_hidden_states <= k < self.num_hidden_states:
            raise ValueError(f"layer: {layer} is outside the model's {self.num_hidden_states} hidden states "
                             f"(0 = embeddings ... {self.num_hidden_states - 1}, or negative from the end)")
        return k

    def layer_dim(self, layer: str) -> int:
        """The width of a hidden state (-1 where it is only known by running: a module's output, flatten)."""
        return self.width if self.hidden_index(layer) is not None and self.pool != "flatten" else -1

    def all_layers(self) -> list[str]:
        """Every hidden state, embeddings first: ``layers="all"``."""
        return [f"hidden_states[{k}]" for k in range(self.num_hidden_states)]

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if self.tokenizer is None:
            raise TypeError(f"{self.name} is a vision model: give it image batches (its transform() makes them)")
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts: expected a list of strings (a batch)")
        batch = self.tokenizer(list(texts), max_length=self.max_length, padding=self.padding,
                               truncation=self.truncation, return_tensors="pt")
        device = next(self.model.parameters()).device
        return {k: v.to(device) for k, v in batch.items()}

    def forward_layers(self, x: Any, layers: Sequence[str]) -> list[torch.Tensor]:
        """Several layers of a batch of texts (or a tokenised batch) from one forward pass."""
        if isinstance(x, torch.Tensor):  # images, made by the image processor (transform())
            x = {"pixel_values": x.to(next(self.model.parameters()).device)}
        batch = self.tokenize(x) if not isinstance(x, dict) else x
        indices = [self.hidden_index(name) for name in layers]
        last = self.num_hidden_states - 1
        # the last hidden state alone is the model's own output (where _probe saw them equal): no need to keep
        # every hidden state
        wanted = [k for k in indices if k is not None]
        every = bool(wanted) and (not self._last_is_output or any(k % self.num_hidden_states != last
                                                                   for k in wanted))
        modules = [name for name, k in zip(layers, indices) if k is None]
        captured, out = self.capture(modules, lambda: self.model(**batch, output_hidden_states=every), stop=False)
        mask = batch.get("attention_mask")
        return [pool_tokens(captured[name] if k is None else out.hidden_states[k] if every else out.last_hidden_state,
                            self.pool, mask) for name, k in zip(layers, indices)]

    def transform(self, paper: bool = False, **_: Any) -> Any:
        """None for texts (tokenised in the forward pass); the image processor for a vision model."""
        if paper:
            raise ValueError(f"transform: the paper's image transforms belong to timm backbones, not {self.name}")
        if self.image_processor is None:
            return None
        processor = self.image_processor
        return lambda image: processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    def transform_id(self, paper: bool = False, **_: Any) -> str:
        """The tokenizer and its options (what turns a text into the model's input), or the image processor."""
        if self.image_processor is not None:
            digest = hashlib.sha256(self.image_processor.to_json_string().encode()).hexdigest()[:16]
            return f"image processor {type(self.image_processor).__name__} {digest}"
        vocab = sorted(self.tokenizer.get_vocab().items())
        h = hashlib.sha256(repr((vocab, self.tokenizer.all_special_tokens, self.tokenizer.padding_side)).encode())
        return (f"tokenizer {type(self.tokenizer).__name__} {h.hexdigest()[:16]} max_length={self.max_length} "
                f"padding={self.padding} truncation={self.truncation}")
