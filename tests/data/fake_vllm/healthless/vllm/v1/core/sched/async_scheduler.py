class AsyncScheduler:
    pass
