"""Refinement: single refinement per failed criterion, SPaR's tree search and its gates, preference pairs."""
