"""What every layer shares: errors, the task a facade hands a backend, the pool's
state, the callback thread, and the backend interface."""
