"""Today's open-model architecture, built from the GPT-2 of chapter 4 (chapter 9).

* ``companion.modern.config``: ``ModernConfig``, one validated config that describes
  GPT-2's block and the Llama/Qwen3 block (and every mix of the two), with presets.
* ``companion.modern.layers``: RMSNorm, rotary position embeddings, SwiGLU, and
  grouped-query attention with an optional QK-norm and a KV cache.
* ``companion.modern.model``: ``ModernGPT``, the model those pieces make.
* ``companion.modern.qwen3``: Qwen3's weights from Hugging Face safetensors, its
  tokenizer and its chat template.
"""
