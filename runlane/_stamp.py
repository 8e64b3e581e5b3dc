import os, time
_fd = None
def stamp(label):
    global _fd
    path = os.environ.get("RUNLANE_STAMPS")
    if not path:
        return
    if _fd is None:
        _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, f"{time.time_ns()} {os.getpid()} {label}\n".encode())
