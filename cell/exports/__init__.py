"""Project exports: the whole project as one zip in its region's object store, with a signed manifest."""
