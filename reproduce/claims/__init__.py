"""The claims of each paper, declared once: reproduce/claims/<paper>.py, each with a list CLAIMS
(see reproduce/judge.py for what a declaration holds and how it is judged)."""
