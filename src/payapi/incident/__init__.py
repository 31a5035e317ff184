"""Incidents and communications (the next issues): declare, update, complete;
templates; channels."""
