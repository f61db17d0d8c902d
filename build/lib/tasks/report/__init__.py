"""Dataset reports: numbers from the catalog, figures, the HTML page, and frame views."""
