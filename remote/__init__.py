"""Drive remote GPU hosts over SSH (Fabric): bootstrap, sync, train in tmux, fetch."""
