"""One module per job kind: ``run(ctx, params) -> result``, called in the job's child process."""
