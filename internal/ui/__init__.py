"""The web UI (Streamlit): a gRPC client of MovieService, health and /metrics."""
