"""domainft: raw domain data -> fine-tuned, evaluated, registered and served language model."""
import logging

# bitsandbytes' CPU backend logs a warning on import when the optional `kernels` package (a faster
# 4-bit CPU matmul) is absent. Its plain torch CPU path, which is all domainft uses on CPU (the NF4
# round trip of a QLoRA adapter's base, domainft.quantization), works without it.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
