"""Link: communities (a default one seeded) and their memberships."""
