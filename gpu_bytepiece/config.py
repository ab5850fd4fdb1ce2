"""Tunables in one place (tests patch them down, e.g. THREADS_PER_BLOCK = 8)."""

#: CUDA threads per block for the segment kernels.
THREADS_PER_BLOCK = 128

#: CPU: chunks of segments per thread (load balance for prange).
CPU_CHUNKS_PER_THREAD = 8

#: CPU: smallest chunk worth a task, in bytes.
CPU_MIN_CHUNK_BYTES = 1 << 16

#: Texts are packed and tokenized in batches of about this many UTF-8 bytes,
#: which bounds scratch memory whatever the input size.
BATCH_BYTES = 4 << 20

#: The same for the CUDA backend: a GPU needs many segments in flight.
CUDA_BATCH_BYTES = 64 << 20

#: CUDA: device memory one packed batch may use for text, scratch and ids
#: (about 25 bytes per input byte + 80 per segment); a bigger batch runs in
#: chunks of whole segments. The resident trie and scores are not counted.
MAX_DEVICE_BYTES = 1 << 30

#: CUDA: most blocks a grid-stride kernel is launched with.
CUDA_MAX_BLOCKS = 1 << 16

#: CUDA: hand segments to threads longest first, so a warp's threads get
#: segments of about equal length (less divergence; same output).
CUDA_SORT_SEGMENTS = True
