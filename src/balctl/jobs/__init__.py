"""Jobs: the control plane hands them out with heartbeat answers; the agent runs them.

model.py        Job, Outcome, JobContext, Completion: the shapes every part agrees on
params.py       strict checks of a job's parameters
catalogue.py    the fixed catalogue: job type -> parameter check + handler
runner.py       one worker thread: each job id once, in order of arrival
completions.py  reporting results to POST /api/agents/jobs/complete, retried with backoff
haproxy_jobs.py haproxy.validate / haproxy.reload / haproxy.server_state
admin_socket.py haproxy.admin_socket.enable / .disable (edit, validate, reload, roll back)
install.py      haproxy.install (also `balctl --provision-haproxy`)
update.py       agent.update (also `balctl --update`)
agent_logs.py   agent.logs (the agent's recent log lines, redacted by redact.py)
tls_jobs.py     tls.acme_issue / tls.acme_renew_force (key and CSR here; the CP runs the order)
"""
