"""Handler runtimes: the supervisor side of handler processes and their in-process bootstrap."""
