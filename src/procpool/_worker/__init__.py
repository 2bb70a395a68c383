"""The worker process and the formats both ends of its pipes speak: the wire frames,
serialization, shared memory."""
