"""Reports: what the shop sold in a period, counted from its orders and payments."""
