"""A regional cell: the API and workers that store and process the data of the projects it homes."""
