"""Tunables in one place (tests patch them down, e.g. THREADS_PER_BLOCK = 8)."""

#: CUDA threads per block for the segment kernels.
THREADS_PER_BLOCK = 128

#: CPU: chunks of segments per thread (load balance for prange).
CPU_CHUNKS_PER_THREAD = 8

#: CPU: smallest chunk worth a task, in bytes.
CPU_MIN_CHUNK_BYTES = 1 << 16

#: Texts are packed and tokenized in batches of about this many UTF-8 bytes,
#: which bounds scratch memory whatever the input size.
BATCH_BYTES = 16 << 20
