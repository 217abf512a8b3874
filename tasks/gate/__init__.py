"""Gate: users, their magic-link tokens, and the mail that carries a link."""
