"""Webhook signature verification: Stripe and Standard Webhooks."""
