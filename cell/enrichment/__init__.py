"""AI enrichment of interactions: summaries, labels and duplicate groups, computed in the project's region.

The method is plain functions over an interaction's words and logs (`text`, `grouping`, `summary`,
`labels`); `providers` chooses between the in-process default and an OpenAI-compatible endpoint the cell
was configured with; `jobs` runs it for every new interaction, serialised per project.
"""
