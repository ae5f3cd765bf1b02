"""The doors into instances that go through the server: JupyterLab and service ports
behind an authenticated reverse proxy (SSH goes straight to each instance's sshd)."""
