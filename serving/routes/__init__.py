"""The HTTP routes, one `APIRouter` per resource of Label Studio's ML backend contract.

Each route reads its body, asks the backend (`serving.backend`) and answers; what a
prediction or a webhook does lives there, without HTTP.
"""
