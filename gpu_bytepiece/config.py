"""Tunables in one place (tests patch them down, e.g. THREADS_PER_BLOCK = 8)."""

#: CUDA threads per block for the segment kernels.
THREADS_PER_BLOCK = 128

#: CPU: chunks of segments per thread (load balance for prange).
CPU_CHUNKS_PER_THREAD = 16

#: CPU: smallest chunk worth a task, in bytes.
CPU_MIN_CHUNK_BYTES = 1 << 16

#: Texts are packed and tokenized in batches of about this many UTF-8 bytes,
#: which bounds scratch memory whatever the input size.
BATCH_BYTES = 4 << 20

#: CPU with several threads: each thread packs and tokenizes batches of this
#: size in turn (packing is Python under the GIL; tokenizing releases it).
#: 1 MiB rather than 512 KiB: 2 threads over 1 thread +0.00 to +0.10 on 11 of
#: 12 model/text cells (4 models; zh gains most), -0.01 on one.
CPU_THREAD_BATCH_BYTES = 1 << 20

#: CPU with several threads: smallest chunk of segments of their shared queue
#: (each chunk costs a call from Python; 64 KiB chunks cost ~5% more CPU).
CPU_THREAD_CHUNK_BYTES = 128 << 10

#: The same for the last batch of an input of known length (a list, tuple or
#: Arrow array): the threads finish within about one such chunk of each other.
CPU_THREAD_LAST_CHUNK_BYTES = 32 << 10

#: CPU with several threads: Python's thread switch interval (seconds) while
#: they run, when the process's is longer (``sys.setswitchinterval``; restored
#: after). A thread coming back from the lattice needs the GIL for a few
#: microseconds of bookkeeping; when another thread is packing text (Python,
#: holding the GIL for ~1 ms per batch), CPython hands the GIL over only after
#: the interval (5 ms by default), so the lattice thread sat idle. ``None``:
#: leave the interval alone.
CPU_THREAD_SWITCH_INTERVAL = 2e-4

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

#: CUDA: segments longer than this many bytes run on a whole thread block
#: each (``kernels.encode_long_segments``: walkers find matches in parallel,
#: one thread relaxes them in lattice order; same ids), not on one thread.
CUDA_LONG_SEGMENT_BYTES = 2048

#: CUDA: threads per block of the long-segment kernel (thread 0 relaxes,
#: up to 32 walkers; must be >= 2).
CUDA_LONG_THREADS = 64

#: CUDA: dynamic shared memory the long-segment kernel may use per block.
CUDA_LONG_SHARED_BYTES = 48 << 10

#: CUDA: a host batch bigger than this many text bytes runs in chunks of
#: about this size on two streams, so that uploading chunk k + 1 overlaps
#: the kernels of chunk k (pinned, double-buffered staging).
CUDA_PIPELINE_BYTES = 16 << 20

#: CUDA: most tiles a device prefix sum cuts its input into (the tile sums
#: are scanned by one block).
CUDA_SCAN_MAX_TILES = 1024

# ---------------------------------------------------------------- pipeline
# (gpu_bytepiece.pipeline: ``gpu-bytepiece encode`` / ``merge``)

#: Bytes read at a time from an input stream.
READ_BLOCK = 4 << 20

#: Largest record (a line of JSONL or of ``--split-lines`` text) a reader
#: keeps; a longer one is a bad record (``too_large``), read past without
#: being buffered (a decompression bomb of one line). ``encode
#: --max-record-bytes`` sets it per job.
MAX_RECORD_BYTES = 256 << 20

#: A one-document text file larger than this is tokenized in fragments of
#: about this size, cut at segment ends (ids are those of the whole document).
#: A fixed constant, not the batch size, so that sampled outputs
#: (``alpha >= 0``) do not depend on the batch size either.
TEXT_FRAGMENT_BYTES = 32 << 20

#: Largest default shard, in input bytes (a byte range of a big line file, or
#: a group of small files). The default is the inputs' total / 64, within
#: [MIN_AUTO_SHARD_BYTES, DEFAULT_SHARD_BYTES], so small jobs still spread
#: over workers. Part of a job's parameters: it fixes the shards.
DEFAULT_SHARD_BYTES = 64 << 20
MIN_AUTO_SHARD_BYTES = 8 << 20

#: The smallest ``--shard-bytes`` taken, and the most shards one job plans
#: (a plan past either is refused with the size that works): a manifest
#: lists every shard, so a tiny shard size on a big input costs more to plan
#: and record than to encode.
MIN_SHARD_BYTES = 256
MAX_SHARDS = 1_000_000

#: Parquet output: row groups end after the row whose text brings the group
#: to at least this many bytes, or at this many rows (deterministic:
#: independent of batch sizes).
PARQUET_ROW_GROUP_BYTES = 64 << 20
PARQUET_ROW_GROUP_ROWS = 1 << 20

# --- trainer ---

#: Trainer: texts are packed (NFC UTF-8) in batches of about this many bytes.
TRAIN_BATCH_BYTES = 8 << 20

#: Trainer, CPU: position keys are sorted in sub-batches of this many text
#: bytes (8 bytes of key each), one sub-batch per thread at a time.
TRAIN_KEY_CHUNK_BYTES = 2 << 20

#: Trainer: default memory budget of the n-gram and piece count runs, in
#: bytes; past it the runs are merged and spilled to disk.
TRAIN_MEMORY_BUDGET = 1 << 30

#: Trainer: pieces are split (re-tokenized) in batches of this many bytes.
TRAIN_SPLIT_BATCH_BYTES = 8 << 20

#: Trainer: allocations from this size on get their own mapping (glibc
#: ``M_MMAP_THRESHOLD``), so that freeing one gives it back to the OS.
TRAIN_MMAP_THRESHOLD = 1 << 20

#: Trainer: a spilled count run keeps every this-many-th key in memory, to
#: find key ranges in it without reading it.
TRAIN_SPILL_SAMPLE = 1 << 14

#: Trainer: small count runs are folded into the main run when they reach
#: ``1 / this`` of its size ...
TRAIN_FOLD_FRACTION = 4

#: ... or this many bytes.
TRAIN_FOLD_MIN_BYTES = 16 << 20

#: Trainer: spilled runs are merged back in key ranges of about
#: ``memory budget / this`` bytes of entries from all runs together.
TRAIN_MERGE_BLOCK_DIVISOR = 64

#: Trainer with a work folder: a corpus pass checkpoints its finished
#: batches (spilling its count runs) every this many input bytes.
TRAIN_CHECKPOINT_BYTES = 256 << 20

#: Trainer: the long-piece hash table starts with ``2 ** this`` slots (it grows).
TRAIN_PIECE_TABLE_BITS = 12

#: Trainer on Ray: batches in flight per actor (sent, not yet reduced by the driver).
TRAIN_RAY_INFLIGHT = 2

#: Trainer: the long pieces (over 7 bytes) of pass 2 may hold ``1 / this``
#: of the memory budget (then they are spilled), the short ones the rest;
#: the pieces pruning drops at once go to disk past that share too.
TRAIN_LONG_PIECE_SHARE = 4

#: Trainer: merged pieces are sorted into kept and dropped ones this many at a time.
TRAIN_SORT_STEP = 1 << 20

#: Largest model file, after decompression, that ``load_model`` reads (a
#: BytePiece model of 1M pieces is about 60 MB); a bigger one is refused, not
#: read (a gzip or zip bomb). Raise it for a larger model: set this, or the
#: environment variable ``GPU_BYTEPIECE_MAX_MODEL_BYTES`` (bytes).
MAX_MODEL_BYTES = 1 << 30
