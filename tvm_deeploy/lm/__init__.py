"""The language-model application: llama2.c checkpoints and tokenizers, the Llama builder, its NumPy reference and int8 quantization."""
