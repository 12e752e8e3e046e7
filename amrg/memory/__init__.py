"""Memory: Grad-CAM mining of disease-aware regions (`mining`, eq. 1) and building the visual bank V and the report
memory R from the training split (`banks`)."""
