"""The dashboard's static files (package data: HTML, CSS, ES modules), served by
``adapters/http/ui.py`` at ``/ui/``. No build step: the files here are what the browser gets."""
